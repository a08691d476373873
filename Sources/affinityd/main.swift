// affinityd: the D-Bus daemon (being built).
print("affinityd")
