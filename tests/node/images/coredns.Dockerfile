# Cluster DNS: CoreDNS built from its Go module by tests/node/tools.sh (static).
FROM scratch
COPY coredns /coredns
ENTRYPOINT ["/coredns"]
