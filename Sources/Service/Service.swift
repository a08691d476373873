// Service target: the engine as a service (model store, analyse queue, jobs).
