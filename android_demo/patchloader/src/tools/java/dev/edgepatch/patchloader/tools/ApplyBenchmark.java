package dev.edgepatch.patchloader.tools;

import dev.edgepatch.patchloader.Delta;
import dev.edgepatch.patchloader.Int8Delta;
import dev.edgepatch.patchloader.TaskDelta;
import dev.edgepatch.patchloader.TfliteBase;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.util.Arrays;

/**
 * Times a task swap on the host JVM: verify + decode a delta (float or int8) held in memory, then
 * write the task into the base's bytes. The base is loaded (sha256 + site index) once, outside the
 * timing, as an app does at start-up.
 *
 * <pre>
 * java -cp build/classes:build/tools dev.edgepatch.patchloader.tools.ApplyBenchmark BASE DELTA [REPEATS]
 * </pre>
 *
 * Prints per phase the median, min and max in milliseconds, after a warm-up of as many
 * runs (so the JIT has compiled the loader, as ART's AOT would have). "cold" is the very
 * first swap, before the warm-up.
 */
public final class ApplyBenchmark {
    private ApplyBenchmark() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2 || args.length > 3) {
            System.err.println("usage: ApplyBenchmark BASE.tflite TASK.delta [REPEATS]");
            System.exit(2);
        }
        int repeats = args.length == 3 ? Integer.parseInt(args[2]) : 50;
        ByteBuffer baseBytes = map(new File(args[0]));
        byte[] deltaBytes = read(new File(args[1]));

        long start = System.nanoTime();
        TfliteBase base = TfliteBase.load(baseBytes, args[0]);
        double loadMs = (System.nanoTime() - start) / 1e6;

        start = System.nanoTime();
        TaskDelta first = TaskDelta.decode(deltaBytes, args[1]);
        base.apply(first);
        double coldMs = (System.nanoTime() - start) / 1e6;

        for (int i = 0; i < repeats; i++) {
            base.apply(TaskDelta.decode(deltaBytes, args[1]));
        }
        double[] decode = new double[repeats];
        double[] apply = new double[repeats];
        double[] applyInto = new double[repeats];
        double[] total = new double[repeats];
        ByteBuffer reused = ByteBuffer.allocateDirect(base.size());
        for (int i = 0; i < repeats; i++) {
            long t0 = System.nanoTime();
            TaskDelta delta = TaskDelta.decode(deltaBytes, args[1]);
            long t1 = System.nanoTime();
            ByteBuffer model = base.apply(delta);
            long t2 = System.nanoTime();
            base.applyInto(delta, reused);
            long t3 = System.nanoTime();
            decode[i] = (t1 - t0) / 1e6;
            apply[i] = (t2 - t1) / 1e6;
            applyInto[i] = (t3 - t2) / 1e6;
            total[i] = decode[i] + apply[i];
            if (model.capacity() != base.size()) {
                throw new IllegalStateException("unexpected model size");
            }
        }
        System.out.printf("base %s: %d bytes, %s; load (sha256 + index, once) %.1f ms%n", args[0], base.size(),
                base.isInt8() ? "int8" : base.siteNames().size() + " sites", loadMs);
        String what = first instanceof Delta ? ((Delta) first).sites().size() + " sites, kinds "
                + ((Delta) first).kinds() : "int8, " + ((Int8Delta) first).refoldCount() + " refolds";
        System.out.printf("delta %s: %d bytes, task %s, %s%n", args[1], deltaBytes.length, first.task().name(), what);
        System.out.printf("cold first swap (decode + apply, before JIT warm-up): %.2f ms%n", coldMs);
        report("decode (verify + unpack)", decode);
        report("apply (new direct buffer)", apply);
        report("applyInto (reused buffer)", applyInto);
        report("swap = decode + apply", total);
    }

    private static void report(String what, double[] ms) {
        double[] sorted = ms.clone();
        Arrays.sort(sorted);
        System.out.printf("%-28s median %6.2f ms  min %6.2f  max %6.2f  (n=%d)%n", what,
                sorted[sorted.length / 2], sorted[0], sorted[sorted.length - 1], sorted.length);
    }

    private static ByteBuffer map(File file) throws IOException {
        FileInputStream in = new FileInputStream(file);
        try {
            FileChannel channel = in.getChannel();
            return channel.map(FileChannel.MapMode.READ_ONLY, 0, channel.size());
        } finally {
            in.close();
        }
    }

    private static byte[] read(File file) throws IOException {
        FileInputStream in = new FileInputStream(file);
        try {
            byte[] data = new byte[(int) file.length()];
            int filled = 0;
            while (filled < data.length) {
                int count = in.read(data, filled, data.length - filled);
                if (count < 0) {
                    throw new IOException(file + ": file shrank while read");
                }
                filled += count;
            }
            return data;
        } finally {
            in.close();
        }
    }
}
