/* Architecture-independent stand-in for <asm/types.h>, so that <linux/bpf.h>
 * compiles for the BPF target with the same result on every build host. */
#include <asm-generic/types.h>
