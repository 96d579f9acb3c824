package dev.edgepatch.demo;

import dev.edgepatch.patchloader.Delta;
import dev.edgepatch.patchloader.EdgepatchException;
import dev.edgepatch.patchloader.TfliteBase;
import java.nio.ByteBuffer;

/**
 * Switches the live task: verify the delta, write it into a copy of the base, create the
 * runtime on it, then close the previous one. Two direct buffers alternate: the one the
 * live runtime reads is never written; the other is free once its runtime is closed.
 * Not thread-safe: call it from one worker thread.
 */
final class TaskSwitcher {
    /** What one swap cost, in milliseconds. */
    static final class Swap {
        final Delta delta;
        final double decodeMs;
        final double patchMs;
        final double createMs;

        Swap(Delta delta, double decodeMs, double patchMs, double createMs) {
            this.delta = delta;
            this.decodeMs = decodeMs;
            this.patchMs = patchMs;
            this.createMs = createMs;
        }

        double totalMs() {
            return decodeMs + patchMs + createMs;
        }
    }

    private final TfliteBase base;
    private final Classifier.Factory factory;
    private final int threads;
    private final ByteBuffer[] buffers = new ByteBuffer[2];
    private int live = -1;
    private Classifier current;
    private Delta currentDelta;

    TaskSwitcher(TfliteBase base, Classifier.Factory factory, int threads) {
        this.base = base;
        this.factory = factory;
        this.threads = threads;
    }

    /** Makes the task in {@code deltaBytes} the live one, allocated for {@code resolution}. */
    Swap swapTo(byte[] deltaBytes, String source, int resolution) throws EdgepatchException {
        long start = System.nanoTime();
        Delta delta = Delta.decode(deltaBytes, source);
        long decoded = System.nanoTime();
        int next = live == 0 ? 1 : 0;
        if (buffers[next] == null) {
            buffers[next] = ByteBuffer.allocateDirect(base.size());
        }
        ByteBuffer model = base.applyInto(delta, buffers[next]);
        long patched = System.nanoTime();
        Classifier created = factory.create(model, threads, resolution);
        long ready = System.nanoTime();
        if (current != null) {
            current.close(); // from now on buffers[live] is free for the next swap
        }
        current = created;
        currentDelta = delta;
        live = next;
        return new Swap(delta, (decoded - start) / 1e6, (patched - decoded) / 1e6, (ready - patched) / 1e6);
    }

    Classifier current() {
        return current;
    }

    Delta currentDelta() {
        return currentDelta;
    }

    void close() {
        if (current != null) {
            current.close();
            current = null;
        }
    }
}
