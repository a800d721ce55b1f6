/*
 * unix_addr.h - unix socket helpers shared by the unix C/R cases: names
 * ("@x" is abstract x), and socket/bind/connect that fail the case.
 * Include after case.h.
 */
#ifndef CTRCR_UNIX_ADDR_H
#define CTRCR_UNIX_ADDR_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static inline socklen_t addr(struct sockaddr_un *a, const char *name)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (name[0] == '@') {
		memcpy(a->sun_path + 1, name + 1, strlen(name) - 1);
		return offsetof(struct sockaddr_un, sun_path) + strlen(name);
	}
	strcpy(a->sun_path, name);
	return offsetof(struct sockaddr_un, sun_path) + strlen(name) + 1;
}

static inline int sock(int type)
{
	int fd = socket(AF_UNIX, type, 0);

	if (fd < 0)
		case_fail("socket: %s", strerror(errno));
	return fd;
}

static inline void do_bind(int fd, const char *name)
{
	struct sockaddr_un a;
	socklen_t l = addr(&a, name);

	if (bind(fd, (void *)&a, l) != 0)
		case_fail("bind %s: %s", name, strerror(errno));
}

static inline void do_connect(int fd, const char *name)
{
	struct sockaddr_un a;
	socklen_t l = addr(&a, name);

	if (connect(fd, (void *)&a, l) != 0)
		case_fail("connect %s: %s", name, strerror(errno));
}

#endif
