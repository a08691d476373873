// NN target.
