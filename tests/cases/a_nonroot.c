/*
 * a_nonroot.c - a process that dropped root keeps exactly its reduced
 * credentials across dump/restore.
 *
 * State (before ready), starting as root:
 *   - WORKDIR/secret created 0600 root:root;
 *   - PR_SET_KEEPCAPS, setgroups({1000}), setresgid(1000 x3),
 *     setresuid(1000 x3);
 *   - with CAP_SETPCAP still permitted: securebits KEEP_CAPS|NO_SETUID_FIXUP,
 *     CAP_SYS_BOOT dropped from the bounding set, CAP_NET_BIND_SERVICE raised
 *     in the ambient set;
 *   - final capabilities: permitted = effective = {NET_BIND_SERVICE},
 *     inheritable = {NET_BIND_SERVICE, NET_RAW}, ambient = {NET_BIND_SERVICE};
 *   - RLIMIT_NOFILE lowered to 500/600 (all 16 limits are recorded), the
 *     dumpable flag as the kernel left it after setuid.
 *
 * Checks (after go): uids/gids (incl. fs ids)/groups; the three capget sets;
 * CapInh/CapPrm/CapEff/CapBnd/CapAmb and Uid/Gid/Groups of /proc/self/status;
 * PR_GET_SECUREBITS, PR_GET_KEEPCAPS, ambient and bounding bits; rlimits;
 * dumpable: all equal. Behaviour: opening WORKDIR/secret fails with EACCES,
 * a raw socket is refused (EPERM), kill(1, 0) is refused (EPERM), while
 * binding a TCP port below 1024 on 127.0.0.1 works (NET_BIND_SERVICE).
 */
#include "case.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#define ID 1000
#define NRLIM 16
#define BIT(c) (1ULL << (c))

struct caps {
	unsigned long long eff, prm, inh;
};

static void get_caps(struct caps *c)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	if (syscall(SYS_capget, &h, d))
		case_fail("capget: %s", strerror(errno));
	c->eff = d[0].effective | (unsigned long long)d[1].effective << 32;
	c->prm = d[0].permitted | (unsigned long long)d[1].permitted << 32;
	c->inh = d[0].inheritable | (unsigned long long)d[1].inheritable << 32;
}

static void set_caps(unsigned long long eff, unsigned long long prm,
		     unsigned long long inh)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2] = {
		{ (unsigned)eff, (unsigned)prm, (unsigned)inh },
		{ (unsigned)(eff >> 32), (unsigned)(prm >> 32),
		  (unsigned)(inh >> 32) },
	};

	if (syscall(SYS_capset, &h, d))
		case_fail("capset eff %#llx prm %#llx inh %#llx: %s", eff, prm,
			  inh, strerror(errno));
}

/* Identity and capability lines of /proc/self/status. */
static void cred_status(char *out, size_t size)
{
	static const char *const keys[] = { "Uid:",    "Gid:",    "Groups:",
					    "CapInh:", "CapPrm:", "CapEff:",
					    "CapBnd:", "CapAmb:", NULL };
	char buf[4096], *line;
	size_t len = 0;
	int k;

	if (case_read_file("/proc/self/status", buf, sizeof(buf)) < 0)
		case_fail("read status: %s", strerror(errno));
	out[0] = 0;
	for (line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
		for (k = 0; keys[k]; k++)
			if (!strncmp(line, keys[k], strlen(keys[k])))
				len += snprintf(out + len, size - len, "%s; ", line);
}

/* Binds a TCP socket to some port in 600-999 on 127.0.0.1; returns 0 or the
 * errno of the first failure other than EADDRINUSE. */
static int bind_low_port(int *port)
{
	int p, s, e = EADDRINUSE;

	for (p = 600 + getpid() % 300; p < 1000 && e == EADDRINUSE; p++) {
		struct sockaddr_in a = { .sin_family = AF_INET,
					 .sin_port = htons(p),
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

		s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (s < 0)
			return errno;
		e = bind(s, (struct sockaddr *)&a, sizeof(a)) ? errno : 0;
		close(s);
		*port = p;
	}
	return e;
}

int main(int argc, char **argv)
{
	static const gid_t grp[] = { ID };
	const unsigned long long nbs = BIT(CAP_NET_BIND_SERVICE),
				 raw = BIT(CAP_NET_RAW), setpcap = BIT(CAP_SETPCAP);
	struct rlimit rl0[NRLIM], rl;
	struct caps c0, c1;
	char st0[1024], st1[1024];
	uid_t ru, eu, su;
	gid_t rg, eg, sg, gl[8];
	int fd, i, n, v, port = 0, dumpable0, secbits0;

	case_init(argc, argv);
	if (geteuid() != 0)
		case_fail("must start as root");

	fd = open("secret", O_CREAT | O_EXCL | O_WRONLY, 0600);
	if (fd < 0 || write(fd, "secret\n", 7) != 7)
		case_fail("create secret: %s", strerror(errno));
	fchmod(fd, 0600);
	close(fd);

	/* Drop to uid/gid 1000, keeping the permitted capabilities. */
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0))
		case_fail("PR_SET_KEEPCAPS: %s", strerror(errno));
	if (setgroups(1, grp) || setresgid(ID, ID, ID) || setresuid(ID, ID, ID))
		case_fail("drop ids: %s", strerror(errno));

	/* Intermediate set with CAP_SETPCAP for the privileged prctls. */
	set_caps(setpcap | nbs, setpcap | nbs | raw, nbs | raw);
	if (prctl(PR_SET_SECUREBITS, SECBIT_KEEP_CAPS | SECBIT_NO_SETUID_FIXUP, 0,
		  0, 0))
		case_fail("PR_SET_SECUREBITS: %s", strerror(errno));
	if (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0))
		case_fail("PR_CAPBSET_DROP: %s", strerror(errno));
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0))
		case_fail("PR_CAP_AMBIENT_RAISE: %s", strerror(errno));
	set_caps(nbs, nbs, nbs | raw);

	rl = (struct rlimit){ 500, 600 };
	if (setrlimit(RLIMIT_NOFILE, &rl))
		case_fail("RLIMIT_NOFILE: %s", strerror(errno));
	for (i = 0; i < NRLIM; i++)
		getrlimit(i, &rl0[i]);

	get_caps(&c0);
	if (c0.eff != nbs || c0.prm != nbs || c0.inh != (nbs | raw))
		case_fail("caps before ready: eff %#llx prm %#llx inh %#llx",
			  c0.eff, c0.prm, c0.inh);
	secbits0 = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
	dumpable0 = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	cred_status(st0, sizeof(st0));
	case_log("%s securebits %#x dumpable %d", st0, secbits0, dumpable0);
	if (open("secret", O_RDONLY) >= 0 || errno != EACCES)
		case_fail("secret readable before ready");
	case_ready();
	case_wait_go();

	/* Identity. */
	if (getresuid(&ru, &eu, &su) || ru != ID || eu != ID || su != ID)
		case_fail("uids %d/%d/%d", ru, eu, su);
	if (getresgid(&rg, &eg, &sg) || rg != ID || eg != ID || sg != ID)
		case_fail("gids %d/%d/%d", rg, eg, sg);
	if ((v = setfsuid(-1)) != ID || (v = setfsgid(-1)) != ID)
		case_fail("fs id %d", v);
	n = getgroups(8, gl);
	if (n != 1 || gl[0] != ID)
		case_fail("groups: %d entries, first %d", n, n > 0 ? (int)gl[0] : -1);

	/* Capabilities and securebits. */
	get_caps(&c1);
	if (c1.eff != c0.eff || c1.prm != c0.prm || c1.inh != c0.inh)
		case_fail("capget eff/prm/inh %#llx/%#llx/%#llx, was %#llx/%#llx/%#llx",
			  c1.eff, c1.prm, c1.inh, c0.eff, c0.prm, c0.inh);
	cred_status(st1, sizeof(st1));
	if (strcmp(st0, st1))
		case_fail("status: %s, was %s", st1, st0);
	if ((v = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0)) != secbits0)
		case_fail("securebits %#x, was %#x", v, secbits0);
	if ((v = prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0)) != 1)
		case_fail("keepcaps %d", v);
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_NET_BIND_SERVICE, 0,
		  0) != 1 ||
	    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_NET_RAW, 0, 0) != 0)
		case_fail("ambient set changed");
	if (prctl(PR_CAPBSET_READ, CAP_SYS_BOOT, 0, 0, 0) != 0 ||
	    prctl(PR_CAPBSET_READ, CAP_NET_RAW, 0, 0, 0) != 1)
		case_fail("bounding set changed");

	/* Limits, dumpable. */
	for (i = 0; i < NRLIM; i++) {
		getrlimit(i, &rl);
		if (rl.rlim_cur != rl0[i].rlim_cur || rl.rlim_max != rl0[i].rlim_max)
			case_fail("rlimit %d: %llu/%llu, was %llu/%llu", i,
				  (unsigned long long)rl.rlim_cur,
				  (unsigned long long)rl.rlim_max,
				  (unsigned long long)rl0[i].rlim_cur,
				  (unsigned long long)rl0[i].rlim_max);
	}
	if ((v = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)) != dumpable0)
		case_fail("dumpable %d, was %d", v, dumpable0);

	/* Behaviour: reduced privileges really apply. */
	fd = open("secret", O_RDONLY);
	if (fd >= 0 || errno != EACCES)
		case_fail("open secret: %s, want EACCES",
			  fd >= 0 ? "opened" : strerror(errno));
	fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
	if (fd >= 0 || errno != EPERM)
		case_fail("raw socket: %s, want EPERM",
			  fd >= 0 ? "created" : strerror(errno));
	if (kill(1, 0) == 0 || errno != EPERM)
		case_fail("kill(1, 0) not refused");
	if ((v = bind_low_port(&port)) != 0)
		case_fail("bind 127.0.0.1:%d: %s (NET_BIND_SERVICE)", port,
			  strerror(v));
	case_log("bound port %d", port);
	case_pass();
}
