/* The UAPI headers the wire structs are checked against (Debian linux-libc-dev). */
#include <linux/fuse.h>
#include <linux/virtio_ring.h>
#include <linux/vhost_types.h>
#include <linux/virtio_fs.h>

_Static_assert(FUSE_KERNEL_VERSION == 7, "FUSE major version 7 expected");
