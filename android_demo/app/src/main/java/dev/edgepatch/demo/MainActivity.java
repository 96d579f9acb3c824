package dev.edgepatch.demo;

import java.nio.ByteBuffer;
import org.tensorflow.lite.Interpreter;

/**
 * The launcher activity: {@link DemoActivity} with LiteRT's Interpreter as the runtime.
 * This is the only class that calls LiteRT (com.google.ai.edge.litert:litert, package
 * org.tensorflow.lite), so it is the only one that needs the LiteRT AAR to compile.
 */
public final class MainActivity extends DemoActivity {
    @Override
    protected Classifier.Factory classifierFactory() {
        return new Classifier.Factory() {
            @Override
            public Classifier create(ByteBuffer model, int threads, int resolution) {
                return new LiteRtClassifier(model, threads, resolution);
            }
        };
    }

    /** One LiteRT interpreter over patched model bytes (a direct, native-order buffer). */
    private static final class LiteRtClassifier implements Classifier {
        private final Interpreter interpreter;
        private final ByteBuffer model; // LiteRT reads the weights from it while the interpreter lives
        private int resolution = -1;
        private float[][] output;

        LiteRtClassifier(ByteBuffer model, int threads, int resolution) {
            this.model = model;
            this.interpreter = new Interpreter(model, new Interpreter.Options().setNumThreads(threads));
            prepare(resolution);
        }

        /** The base takes any square size (input [-1, -1, -1, 3]); XNNPACK packs weights here. */
        private void prepare(int size) {
            if (size == resolution) {
                return;
            }
            interpreter.resizeInput(0, new int[] {1, size, size, 3});
            interpreter.allocateTensors();
            output = new float[1][interpreter.getOutputTensor(0).shape()[1]];
            resolution = size;
        }

        @Override
        public float[] run(ByteBuffer image, int size) {
            prepare(size);
            image.rewind();
            interpreter.run(image, output);
            return output[0].clone();
        }

        @Override
        public void close() {
            interpreter.close();
        }

        @Override
        public String toString() {
            return "LiteRT interpreter over " + model.capacity() + " model bytes";
        }
    }
}
