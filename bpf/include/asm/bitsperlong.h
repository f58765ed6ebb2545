/* BPF is a 64-bit target whatever the build host is. */
#define __BITS_PER_LONG 64
#include <asm-generic/bitsperlong.h>
