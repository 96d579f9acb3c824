package dev.edgepatch.demo;

/** Softmax and top-k over a task's logits (the head's first {@code classes} columns). */
final class Scores {
    private Scores() {
    }

    static float[] softmax(float[] logits, int classes) {
        float max = Float.NEGATIVE_INFINITY;
        for (int i = 0; i < classes; i++) {
            max = Math.max(max, logits[i]);
        }
        double sum = 0;
        double[] exp = new double[classes];
        for (int i = 0; i < classes; i++) {
            exp[i] = Math.exp(logits[i] - max);
            sum += exp[i];
        }
        float[] out = new float[classes];
        for (int i = 0; i < classes; i++) {
            out[i] = (float) (exp[i] / sum);
        }
        return out;
    }

    /** Indices of the k largest values, largest first (ties: lower index first). */
    static int[] topK(float[] values, int k) {
        int n = Math.min(k, values.length);
        int[] best = new int[n];
        boolean[] taken = new boolean[values.length];
        for (int rank = 0; rank < n; rank++) {
            int pick = -1;
            for (int i = 0; i < values.length; i++) {
                if (!taken[i] && (pick < 0 || values[i] > values[pick])) {
                    pick = i;
                }
            }
            taken[pick] = true;
            best[rank] = pick;
        }
        return best;
    }

    static double median(double[] values) {
        double[] sorted = values.clone();
        java.util.Arrays.sort(sorted);
        return sorted[sorted.length / 2];
    }
}
