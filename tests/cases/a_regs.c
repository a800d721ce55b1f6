/*
 * a_regs.c - register state survives dump/restore.
 *
 * State: a worker thread runs one inline-asm block that
 *   - sets MXCSR to round-toward-zero + FZ + DAZ (0xffc0) and the x87
 *     control word to truncate / double precision (0x0e7f), and pushes a
 *     distinctive value on the x87 stack;
 *   - loads distinctive values into every vector register under test:
 *     zmm0-zmm31 and opmasks k2-k7 with AVX-512 (k1 is the compare scratch),
 *     else ymm0-ymm14 with AVX2, else xmm0-xmm14 (xmm15/ymm15 scratch);
 *   - loads constants into r9-r12, r14, r15 and keeps an evolving pair
 *     rbx = n, r13 = ~n (incremented/decremented every iteration);
 *   - then loops comparing every register against the reference table (which
 *     is only read), never storing a register under test, and only leaves the
 *     loop when the memory flag `stop` is set (by a second thread that polls
 *     the go file), after one more full comparison pass.
 * The values therefore live only in registers while the process is dumped.
 *
 * Checks (after go): no register mismatch in any pass; MXCSR and the x87
 * control word still hold the non-default values and still act (2.7 is
 * converted to 2 by cvtsd2si and fistp); the x87 stack value is intact; the
 * loop kept iterating; the main thread's MXCSR/FCW are still the defaults.
 */
#include "case.h"

#include <pthread.h>
#include <stdint.h>

#define MXCSR_SET 0xffc0 /* RC=toward zero, FZ, DAZ, all exceptions masked */
#define FCW_SET 0x0e7f	 /* RC=truncate, PC=double, all exceptions masked */

/* GPR constants (must be literal for movabs). */
#define C_R9 "0x0909a5a5c3c3f0f0"
#define C_R10 "0x1010deadbeef1010"
#define C_R11 "0x1111fedcba981111"
#define C_R12 "0x1212123456781212"
#define C_R14 "0x1414a1b2c3d41414"
#define C_R15 "0x15150f1e2d3c1515"
/* Opmask constants. */
#define C_K2 "0x2222f00dcafe2222"
#define C_K3 "0x3333b16b00b53333"
#define C_K4 "0x4444123443214444"
#define C_K5 "0x5555aaaa55555555"
#define C_K6 "0x6666deadc0de6666"
#define C_K7 "0x7777777711117777"

/* Reference table: 32 registers x 64 bytes, read-only for the asm. */
static uint64_t ref[32][8] __attribute__((aligned(64)));

/* Inputs/outputs of the asm block (globals: rip-relative operands). */
static volatile int stop;
static volatile int running;
static uint32_t mxcsr_set = MXCSR_SET, mxcsr_def = 0x1f80, mxcsr_got;
static uint16_t fcw_set = FCW_SET, fcw_def = 0x037f, fcw_got;
static const double c27 = 2.7;
static const double x87ref = 1234.5678;
static double x87_got;
static int64_t cvt_got;
static int32_t fist_got;
static uint64_t iters;
static int result; /* 0: all passes ok; else 1 + index of the failed check */
static const char *variant;

#define ALL15(M)                                                               \
	M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12)   \
	M(13) M(14)
#define ALL32(M)                                                               \
	ALL15(M) M(15) M(16) M(17) M(18) M(19) M(20) M(21) M(22) M(23) M(24)  \
	M(25) M(26) M(27) M(28) M(29) M(30) M(31)

/* Per-register load / check; %rsi points to ref, %ecx = check index. */
#define Z_LOAD(n) "vmovdqu64 " #n "*64(%%rsi), %%zmm" #n "\n\t"
#define Z_CHECK(n)                                                             \
	"mov $" #n ", %%ecx\n\t"                                               \
	"vpcmpq $4, " #n "*64(%%rsi), %%zmm" #n ", %%k1\n\t"                   \
	"kortestw %%k1, %%k1\n\t"                                              \
	"jnz 90f\n\t"
#define Y_LOAD(n) "vmovdqu " #n "*64(%%rsi), %%ymm" #n "\n\t"
#define Y_CHECK(n)                                                             \
	"mov $" #n ", %%ecx\n\t"                                               \
	"vpxor " #n "*64(%%rsi), %%ymm" #n ", %%ymm15\n\t"                     \
	"vptest %%ymm15, %%ymm15\n\t"                                          \
	"jnz 90f\n\t"
#define X_LOAD(n) "movdqa " #n "*64(%%rsi), %%xmm" #n "\n\t"
#define X_CHECK(n)                                                             \
	"mov $" #n ", %%ecx\n\t"                                               \
	"movdqa %%xmm" #n ", %%xmm15\n\t"                                      \
	"pcmpeqb " #n "*64(%%rsi), %%xmm15\n\t"                                \
	"pmovmskb %%xmm15, %%eax\n\t"                                          \
	"cmp $0xffff, %%eax\n\t"                                               \
	"jne 90f\n\t"

#define K_LOAD(n) "movabs $" C_K##n ", %%rax\n\t kmovq %%rax, %%k" #n "\n\t"
#define K_CHECK(n)                                                             \
	"mov $(100+" #n "), %%ecx\n\t"                                         \
	"kmovq %%k" #n ", %%rax\n\t"                                           \
	"movabs $" C_K##n ", %%rdx\n\t"                                        \
	"cmp %%rdx, %%rax\n\t"                                                 \
	"jne 90f\n\t"
#define K_ALL(M) M(2) M(3) M(4) M(5) M(6) M(7)

#define G_LOAD(r) "movabs $" C_##r ", %%" #r "\n\t"
#define G_CHECK(i, r)                                                          \
	"mov $(200+" #i "), %%ecx\n\t"                                         \
	"movabs $" C_##r ", %%rax\n\t"                                         \
	"cmp %%rax, %%" #r "\n\t"                                              \
	"jne 90f\n\t"
#define G_LOADS                                                                \
	G_LOAD(r9) G_LOAD(r10) G_LOAD(r11) G_LOAD(r12) G_LOAD(r14) G_LOAD(r15)
#define G_CHECKS                                                               \
	G_CHECK(9, r9) G_CHECK(10, r10) G_CHECK(11, r11) G_CHECK(12, r12)     \
	G_CHECK(14, r14) G_CHECK(15, r15)                                      \
	/* evolving pair: r13 == ~rbx */                                       \
	"mov $300, %%ecx\n\t"                                                  \
	"mov %%rbx, %%rax\n\t"                                                 \
	"xor %%r13, %%rax\n\t"                                                 \
	"cmp $-1, %%rax\n\t"                                                   \
	"jne 90f\n\t"

/* Lowercase aliases so that C_##r works with register names. */
#define C_r9 C_R9
#define C_r10 C_R10
#define C_r11 C_R11
#define C_r12 C_R12
#define C_r14 C_R14
#define C_r15 C_R15

/* Prologue: control registers, x87 stack, GPRs, loop counter, flag. */
#define PROLOGUE                                                               \
	"ldmxcsr %[mxset]\n\t"                                                 \
	"fldcw %[fcwset]\n\t"                                                  \
	"fldl %[x87ref]\n\t" G_LOADS "xor %%ebx, %%ebx\n\t"                    \
	"mov $-1, %%r13\n\t"                                                   \
	"xor %%r8d, %%r8d\n\t"

/* Loop tail: advance the pair; after stop, one more full pass, then out. */
#define LOOP_TAIL                                                              \
	"inc %%rbx\n\t"                                                        \
	"dec %%r13\n\t"                                                        \
	"test %%r8, %%r8\n\t"                                                  \
	"jnz 80f\n\t"                                                          \
	"cmpl $0, %[stop]\n\t"                                                 \
	"je 1b\n\t"                                                            \
	"mov $1, %%r8d\n\t"                                                    \
	"jmp 1b\n\t"                                                           \
	"80:\n\t"                                                              \
	"xor %%eax, %%eax\n\t"                                                 \
	"jmp 95f\n\t"                                                          \
	"90:\n\t"                                                              \
	"lea 1(%%rcx), %%eax\n\t"                                              \
	"95:\n\t"                                                              \
	"mov %%eax, %[result]\n\t"                                             \
	"mov %%rbx, %[iters]\n\t"                                              \
	"stmxcsr %[mxgot]\n\t"                                                 \
	"fnstcw %[fcwgot]\n\t"                                                 \
	"fldl %[c27]\n\t"                                                      \
	"fistpl %[fist]\n\t"                                                   \
	"fstpl %[x87got]\n\t"

#define EPILOGUE                                                               \
	"ldmxcsr %[mxdef]\n\t"                                                 \
	"fldcw %[fcwdef]\n\t"

#define OPERANDS                                                               \
	: [result] "=m"(result), [iters] "=m"(iters), [mxgot] "=m"(mxcsr_got), \
	  [fcwgot] "=m"(fcw_got), [fist] "=m"(fist_got),                       \
	  [x87got] "=m"(x87_got), [cvt] "=m"(cvt_got), [running] "+m"(running) \
	: "S"(ref), [stop] "m"(stop), [mxset] "m"(mxcsr_set),                  \
	  [fcwset] "m"(fcw_set), [mxdef] "m"(mxcsr_def),                       \
	  [fcwdef] "m"(fcw_def), [c27] "m"(c27), [x87ref] "m"(x87ref)

#define GPR_CLOBBERS                                                           \
	"rax", "rbx", "rcx", "rdx", "r8", "r9", "r10", "r11", "r12", "r13",    \
		"r14", "r15", "memory", "cc"

__attribute__((target("avx512f,avx512bw"))) static void regs_avx512(void)
{
	variant = "avx512: zmm0-31, k2-k7";
	asm volatile(PROLOGUE ALL32(Z_LOAD) K_ALL(K_LOAD)
		     "movl $1, %[running]\n\t"
		     "1:\n\t" ALL32(Z_CHECK) K_ALL(K_CHECK) G_CHECKS LOOP_TAIL
		     "vmovsd %[c27], %%xmm0\n\t"
		     "vcvtsd2si %%xmm0, %%rdx\n\t"
		     "mov %%rdx, %[cvt]\n\t" EPILOGUE "vzeroupper\n\t" OPERANDS
		     : GPR_CLOBBERS, "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",
		       "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
		       "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17",
		       "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23",
		       "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29",
		       "xmm30", "xmm31", "k1", "k2", "k3", "k4", "k5", "k6",
		       "k7");
}

__attribute__((target("avx2"))) static void regs_avx2(void)
{
	variant = "avx2: ymm0-14";
	asm volatile(PROLOGUE ALL15(Y_LOAD) "movl $1, %[running]\n\t"
					    "1:\n\t" ALL15(Y_CHECK) G_CHECKS
						    LOOP_TAIL
		     "vmovsd %[c27], %%xmm0\n\t"
		     "vcvtsd2si %%xmm0, %%rdx\n\t"
		     "mov %%rdx, %[cvt]\n\t" EPILOGUE "vzeroupper\n\t" OPERANDS
		     : GPR_CLOBBERS, "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",
		       "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
		       "xmm12", "xmm13", "xmm14", "xmm15");
}

static void regs_sse(void)
{
	variant = "sse: xmm0-14";
	asm volatile(PROLOGUE ALL15(X_LOAD) "movl $1, %[running]\n\t"
					    "1:\n\t" ALL15(X_CHECK) G_CHECKS
						    LOOP_TAIL
		     "movsd %[c27], %%xmm0\n\t"
		     "cvtsd2si %%xmm0, %%rdx\n\t"
		     "mov %%rdx, %[cvt]\n\t" EPILOGUE OPERANDS
		     : GPR_CLOBBERS, "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",
		       "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
		       "xmm12", "xmm13", "xmm14", "xmm15");
}

/* REGS_VARIANT (a -D flag) caps the variant: 3 avx512, 2 avx2, 1 sse. */
#ifndef REGS_VARIANT
#define REGS_VARIANT 3
#endif

static int pick_variant(void)
{
	if (REGS_VARIANT >= 3 && __builtin_cpu_supports("avx512f") &&
	    __builtin_cpu_supports("avx512bw"))
		return 3;
	if (REGS_VARIANT >= 2 && __builtin_cpu_supports("avx2"))
		return 2;
	return 1;
}

static void *regs_thread(void *arg)
{
	(void)arg;
	switch (pick_variant()) {
	case 3:
		regs_avx512();
		break;
	case 2:
		regs_avx2();
		break;
	default:
		regs_sse();
	}
	return NULL;
}

/* The poller waits for the go file and then releases the asm loop. */
static void *poller_thread(void *arg)
{
	(void)arg;
	case_wait_go();
	__atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void get_ctl(uint32_t *mx, uint16_t *cw)
{
	asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(*mx), "=m"(*cw));
}

int main(int argc, char **argv)
{
	pthread_t regs, poller;
	uint64_t seed = 0x5eed0fc7c4;
	uint32_t main_mx0, main_mx1;
	uint16_t main_cw0, main_cw1;
	struct timespec deadline;
	int i, j, err;

	case_init(argc, argv);
	for (i = 0; i < 32; i++)
		for (j = 0; j < 8; j++)
			ref[i][j] = splitmix(&seed);
	get_ctl(&main_mx0, &main_cw0);

	if (pthread_create(&regs, NULL, regs_thread, NULL) ||
	    pthread_create(&poller, NULL, poller_thread, NULL))
		case_fail("pthread_create");
	while (!__atomic_load_n(&running, __ATOMIC_SEQ_CST))
		case_sleep_ms(1);
	case_log("register loop running: %s", variant);
	case_ready();

	/* After go the poller sets stop; the loop must finish quickly. */
	pthread_join(poller, NULL);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 10;
	err = pthread_timedjoin_np(regs, NULL, &deadline);
	if (err)
		case_fail("register thread did not leave its loop: %s",
			  strerror(err));

	case_log("%s: %llu iterations", variant, (unsigned long long)iters);
	if (result != 0) {
		int c = result - 1;

		if (c < 32)
			case_fail("vector register %d changed", c);
		if (c < 200)
			case_fail("opmask k%d changed", c - 100);
		if (c < 300)
			case_fail("r%d changed", c - 200);
		case_fail("evolving pair rbx/r13 inconsistent");
	}
	if (iters < 2)
		case_fail("register loop ran only %llu iterations",
			  (unsigned long long)iters);
	if ((mxcsr_got & ~0x3fu) != MXCSR_SET)
		case_fail("MXCSR %#x, want %#x (status bits ignored)", mxcsr_got,
			  MXCSR_SET);
	if (fcw_got != FCW_SET)
		case_fail("x87 control word %#x, want %#x", fcw_got, FCW_SET);
	if (cvt_got != 2)
		case_fail("cvtsd2si(2.7) = %lld under round-toward-zero, want 2",
			  (long long)cvt_got);
	if (fist_got != 2)
		case_fail("fistp(2.7) = %d under x87 truncation, want 2", fist_got);
	if (x87_got != x87ref)
		case_fail("x87 st(0) = %.17g, want %.17g", x87_got, x87ref);

	get_ctl(&main_mx1, &main_cw1);
	if ((main_mx1 & ~0x3fu) != (main_mx0 & ~0x3fu) || main_cw1 != main_cw0)
		case_fail("main thread MXCSR/FCW changed: %#x/%#x -> %#x/%#x",
			  main_mx0, main_cw0, main_mx1, main_cw1);
	case_pass();
}
