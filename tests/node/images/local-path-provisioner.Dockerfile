# The dynamic volume provisioner kind ships, built from its Go module by tests/node/tools.sh.
FROM debian:bookworm-slim
COPY local-path-provisioner /usr/bin/local-path-provisioner
ENTRYPOINT ["/usr/bin/local-path-provisioner"]
