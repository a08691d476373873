print("affinity-lab")
