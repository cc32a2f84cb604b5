"""Development tooling: the demo, the sample server, the appliance, docker and zipapp
builds, network namespaces. The one part of the package that may import test helpers."""
