// Imaging target.
