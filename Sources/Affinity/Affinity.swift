// Affinity target.
