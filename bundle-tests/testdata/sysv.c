/*
 * sysv: SysV IPC inside a container, for TestRestore_SysV (static, in the
 * busybox rootfs).
 *   sysv setup   creates a shm segment (key 0x5150, 8 KiB, "ctr-cr shm"
 *                at offset 4096), a semaphore set (key 0x5151, values
 *                3 and 7) and a message queue (key 0x5152, two messages
 *                of types 1 and 2), then sleeps forever (its attachment
 *                keeps the segment mapped in a live process)
 *   sysv check   prints "OK" when all of that is there with the same ids
 *                as in /tmp/sysv.ids, else what differs
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

struct msg { long type; char text[32]; };

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "setup")) {
		int shm = shmget(0x5150, 8192, IPC_CREAT | 0600);
		int sem = semget(0x5151, 2, IPC_CREAT | 0600);
		int msq = msgget(0x5152, IPC_CREAT | 0600);
		unsigned short vals[2] = {3, 7};
		struct msg m1 = {1, "first"}, m2 = {2, "second"};
		char *p;
		FILE *f;

		if (shm < 0 || sem < 0 || msq < 0)
			return 1;
		p = shmat(shm, NULL, 0);
		strcpy(p + 4096, "ctr-cr shm");
		semctl(sem, 0, SETALL, vals);
		msgsnd(msq, &m1, sizeof m1.text, 0);
		msgsnd(msq, &m2, sizeof m2.text, 0);
		f = fopen("/tmp/sysv.ids", "w");
		fprintf(f, "%d %d %d\n", shm, sem, msq);
		fclose(f);
		for (;;)
			pause();
	}
	if (argc == 2 && !strcmp(argv[1], "check")) {
		int ids[3], shm, sem, msq;
		unsigned short vals[2];
		struct msg m;
		FILE *f = fopen("/tmp/sysv.ids", "r");
		char *p;

		if (!f || fscanf(f, "%d %d %d", &ids[0], &ids[1], &ids[2]) != 3)
			return puts("no ids"), 1;
		shm = shmget(0x5150, 0, 0);
		sem = semget(0x5151, 0, 0);
		msq = msgget(0x5152, 0);
		if (shm != ids[0] || sem != ids[1] || msq != ids[2])
			return printf("ids %d %d %d, were %d %d %d\n", shm, sem, msq, ids[0], ids[1], ids[2]), 1;
		p = shmat(shm, NULL, SHM_RDONLY);
		if (p == (void *)-1 || strcmp(p + 4096, "ctr-cr shm"))
			return puts("shm contents"), 1;
		if (semctl(sem, 0, GETALL, vals) < 0 || vals[0] != 3 || vals[1] != 7)
			return puts("semaphore values"), 1;
		if (msgrcv(msq, &m, sizeof m.text, 0, IPC_NOWAIT) < 0 || m.type != 1 || strcmp(m.text, "first"))
			return puts("first message"), 1;
		if (msgrcv(msq, &m, sizeof m.text, 0, IPC_NOWAIT) < 0 || m.type != 2 || strcmp(m.text, "second"))
			return puts("second message"), 1;
		return puts("OK"), 0;
	}
	return 2;
}
