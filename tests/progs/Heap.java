// Heap: a JVM holding a few hundred MiB of heap and 20 busy threads, for
// TestReal_JVM. Usage: java Heap WORKDIR MIB. Writes WORKDIR/ready once
// the heap is filled and the threads run, waits for WORKDIR/go, then
// checks from inside that the heap holds what it held (a sum over every
// 512th byte) and that every thread still counts, and writes "PASS" or
// "FAIL: ..." to WORKDIR/result.
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.concurrent.atomic.AtomicLongArray;

public class Heap {
    static final int CHUNK = 1 << 18; // 256 KiB: not humongous for G1
    static final int THREADS = 20;

    public static void main(String[] args) throws Exception {
        Path dir = Paths.get(args[0]);
        int chunks = Integer.parseInt(args[1]) * 4;
        byte[][] heap = new byte[chunks][];
        long sum = 0;
        for (int i = 0; i < chunks; i++) {
            heap[i] = new byte[CHUNK];
            for (int j = 0; j < CHUNK; j += 512) {
                heap[i][j] = (byte) (i * 31 + j / 512);
                sum += heap[i][j];
            }
        }
        AtomicLongArray counts = new AtomicLongArray(THREADS);
        for (int t = 0; t < THREADS; t++) {
            final int id = t;
            Thread th = new Thread(() -> {
                while (true) {
                    counts.incrementAndGet(id);
                    try {
                        Thread.sleep(5);
                    } catch (InterruptedException e) {
                        return;
                    }
                }
            }, "counter-" + t);
            th.setDaemon(true);
            th.start();
        }
        Files.writeString(dir.resolve("ready"), "ready\n");
        while (!Files.exists(dir.resolve("go"))) {
            Thread.sleep(20);
        }
        String result = "PASS";
        long sum2 = 0;
        for (int i = 0; i < chunks; i++) {
            for (int j = 0; j < CHUNK; j += 512) {
                sum2 += heap[i][j];
            }
        }
        if (sum2 != sum) {
            result = "FAIL: heap sum " + sum2 + ", was " + sum;
        }
        long[] before = new long[THREADS];
        for (int t = 0; t < THREADS; t++) {
            before[t] = counts.get(t);
        }
        Thread.sleep(300);
        for (int t = 0; t < THREADS; t++) {
            if (counts.get(t) <= before[t]) {
                result = "FAIL: thread counter-" + t + " does not run";
            }
        }
        System.gc(); // the collector walks the whole restored heap
        // written whole, then renamed: the test reads it once it exists
        Files.writeString(dir.resolve("result.tmp"), result + "\n");
        Files.move(dir.resolve("result.tmp"), dir.resolve("result"), StandardCopyOption.ATOMIC_MOVE);
    }
}
