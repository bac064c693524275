/*
 * Compile-time proof that the C# wire structs match the kernel's.
 *
 * The generated layout header (see Makefile) defines WIRE_CHECKS as a list of
 *   WIRE_SIZE(struct_name, csharp_size)
 *   WIRE_FIELD(struct_name, field_name, csharp_offset, csharp_size)
 * entries; each expands to a _Static_assert against the real struct from the headers below.
 */
#include <stddef.h>
#include <linux/fuse.h>
#include <linux/virtio_ring.h>
#include <linux/vhost_types.h>
#include <linux/virtio_fs.h>

#define WIRE_SIZE(s, size) \
    _Static_assert(sizeof(struct s) == (size), "C# size of " #s " differs from the kernel header");
#define WIRE_FIELD(s, f, off, size) \
    _Static_assert(offsetof(struct s, f) == (off), "C# offset of " #s "." #f " differs from the kernel header"); \
    _Static_assert(sizeof(((struct s *)0)->f) == (size), "C# size of " #s "." #f " differs from the kernel header");

#ifndef WIRE_CHECKS
#error "no layout header: run the WireLayoutTests test, which generates it and runs make check"
#endif
WIRE_CHECKS
