package dev.edgepatch.demo;

import java.nio.ByteBuffer;

/**
 * A task's model, ready to run: patched model bytes handed to an inference runtime.
 * {@code MainActivity} implements it with LiteRT; nothing else here knows the runtime.
 */
interface Classifier {
    /** Makes a classifier from model bytes the runtime may read for the classifier's whole life. */
    interface Factory {
        /** Creates the runtime and allocates it for square inputs of {@code resolution} pixels. */
        Classifier create(ByteBuffer model, int threads, int resolution);
    }

    /**
     * Logits for one image: {@code image} holds [1, resolution, resolution, 3] float32 in native
     * order, already preprocessed. Returns the head's full width (pad columns included).
     */
    float[] run(ByteBuffer image, int resolution);

    /** Frees the runtime; the model bytes may be reused afterwards. */
    void close();
}
