/*
 * n_ipcuts: a process in IPC, UTS and cgroup namespaces of its own (as
 * under `unshare --ipc --uts --cgroup`, or postgres started that way),
 * dumped with
 * `dump -t`: the image carries both namespaces and restore creates them
 * again around the process.
 *
 * Before ready: unshare(CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP);
 * sethostname and
 * setdomainname; a keyed SysV shm segment attached at a fixed place with a
 * pattern written through the mapping, a second private segment attached
 * read-only; a semaphore set with values; a message queue with two
 * messages.
 *
 * After go (checked from inside, after the restores): hostname and
 * domainname as set; the same shm ids and key, still attached here with
 * the pattern (writes through the mapping reach the segment: shmctl
 * IPC_STAT counts one attach each); semaphore values; the messages in
 * order; /proc/self/cgroup shows the namespace's root. Nothing of this exists in the IPC namespace of the test (checked
 * from outside by the Go side: the namespaces differ from the test's).
 */
#include "case.h"

#include <sched.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			case_fail(__VA_ARGS__);                                \
	} while (0)

#define SHM_KEY 0x5eed
#define SHM_SIZE (3 * 4096)

union semun {
	int val;
	struct semid_ds *buf;
	unsigned short *array;
};

struct msg {
	long type;
	char text[32];
};

int main(int argc, char **argv)
{
	char host[128], dom[128];
	unsigned short vals[3] = {7, 0, 42}, got[3];
	struct shmid_ds ds;
	struct msg m;
	int shm, shm2, sem, mq, i;
	unsigned char *p, *p2;

	case_init(argc, argv);
	CHECK(unshare(CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP) == 0,
	      "unshare: %s", strerror(errno));
	CHECK(sethostname("ctrcr-ns-host", 13) == 0, "sethostname: %s",
	      strerror(errno));
	CHECK(setdomainname("ctrcr.example", 13) == 0, "setdomainname: %s",
	      strerror(errno));

	shm = shmget(SHM_KEY, SHM_SIZE, IPC_CREAT | IPC_EXCL | 0640);
	CHECK(shm >= 0, "shmget: %s", strerror(errno));
	p = shmat(shm, NULL, 0);
	CHECK(p != (void *)-1, "shmat: %s", strerror(errno));
	for (i = 0; i < SHM_SIZE; i++)
		p[i] = (unsigned char)(i * 7 + 3);
	shm2 = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
	CHECK(shm2 >= 0, "shmget private: %s", strerror(errno));
	p2 = shmat(shm2, NULL, 0);
	CHECK(p2 != (void *)-1, "shmat 2: %s", strerror(errno));
	strcpy((char *)p2, "private segment");
	CHECK(shmdt(p2) == 0, "shmdt: %s", strerror(errno));
	p2 = shmat(shm2, NULL, SHM_RDONLY);
	CHECK(p2 != (void *)-1, "shmat ro: %s", strerror(errno));

	sem = semget(IPC_PRIVATE, 3, IPC_CREAT | 0600);
	CHECK(sem >= 0, "semget: %s", strerror(errno));
	CHECK(semctl(sem, 0, SETALL, (union semun){.array = vals}) == 0,
	      "SETALL: %s", strerror(errno));
	mq = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
	CHECK(mq >= 0, "msgget: %s", strerror(errno));
	m.type = 5;
	strcpy(m.text, "first");
	CHECK(msgsnd(mq, &m, sizeof(m.text), 0) == 0, "msgsnd: %s",
	      strerror(errno));
	m.type = 9;
	strcpy(m.text, "second");
	CHECK(msgsnd(mq, &m, sizeof(m.text), 0) == 0, "msgsnd: %s",
	      strerror(errno));

	case_ready();
	case_wait_go();

	CHECK(gethostname(host, sizeof(host)) == 0, "gethostname: %s",
	      strerror(errno));
	CHECK(strcmp(host, "ctrcr-ns-host") == 0, "hostname %s", host);
	CHECK(getdomainname(dom, sizeof(dom)) == 0, "getdomainname: %s",
	      strerror(errno));
	CHECK(strcmp(dom, "ctrcr.example") == 0, "domainname %s", dom);

	CHECK(shmget(SHM_KEY, 0, 0) == shm, "key %#x is id %d, want %d",
	      SHM_KEY, shmget(SHM_KEY, 0, 0), shm);
	for (i = 0; i < SHM_SIZE; i++)
		CHECK(p[i] == (unsigned char)(i * 7 + 3), "shm byte %d is %d", i,
		      p[i]);
	p[100] = 0xab;
	CHECK(shmctl(shm, IPC_STAT, &ds) == 0, "IPC_STAT: %s", strerror(errno));
	CHECK(ds.shm_nattch == 1, "shm nattch %lu", (unsigned long)ds.shm_nattch);
	CHECK(ds.shm_segsz == SHM_SIZE, "shm size %zu", ds.shm_segsz);
	/* the mapping is the segment: a second attach sees the write */
	{
		unsigned char *q = shmat(shm, NULL, SHM_RDONLY);

		CHECK(q != (void *)-1, "shmat again: %s", strerror(errno));
		CHECK(q[100] == 0xab, "write through the restored mapping lost");
		shmdt(q);
	}
	CHECK(strcmp((char *)p2, "private segment") == 0, "private shm %s",
	      (char *)p2);
	CHECK(shmctl(shm2, IPC_STAT, &ds) == 0, "IPC_STAT 2: %s",
	      strerror(errno));
	CHECK(ds.shm_nattch == 1, "shm2 nattch %lu",
	      (unsigned long)ds.shm_nattch);

	CHECK(semctl(sem, 0, GETALL, (union semun){.array = got}) == 0,
	      "GETALL: %s", strerror(errno));
	CHECK(got[0] == 7 && got[1] == 0 && got[2] == 42, "sem %d %d %d",
	      got[0], got[1], got[2]);
	CHECK(msgrcv(mq, &m, sizeof(m.text), 0, IPC_NOWAIT) == sizeof(m.text),
	      "msgrcv: %s", strerror(errno));
	CHECK(m.type == 5 && strcmp(m.text, "first") == 0, "msg 1 %ld %s",
	      m.type, m.text);
	CHECK(msgrcv(mq, &m, sizeof(m.text), 0, IPC_NOWAIT) == sizeof(m.text),
	      "msgrcv 2: %s", strerror(errno));
	CHECK(m.type == 9 && strcmp(m.text, "second") == 0, "msg 2 %ld %s",
	      m.type, m.text);
	/* the cgroup namespace: rooted where the process sits */
	{
		char cg[4096], *line, *save = NULL;

		CHECK(case_read_file("/proc/self/cgroup", cg, sizeof(cg)) > 0,
		      "read /proc/self/cgroup");
		for (line = strtok_r(cg, "\n", &save); line;
		     line = strtok_r(NULL, "\n", &save)) {
			char *path = strrchr(line, ':');

			CHECK(path && strcmp(path, ":/") == 0,
			      "cgroup line %s: not at the namespace's root", line);
		}
	}
	case_pass();
}
