# The etcd image, built the same way as the Telegraft image (see Dockerfile): Debian's
# etcd-server binary (/usr/bin/etcd) and the shared libraries it loads, on no base image,
# as uid 10001. `loadgen bench --deploy docker --set system=etcd` starts its members from it.
# No health check: the image has no etcdctl nor shell to run one, and loadgen asks each
# member's Status itself.
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/bin
USER 10001:10001
WORKDIR /data
EXPOSE 2379 2380
ENTRYPOINT ["/usr/local/bin/etcd"]
