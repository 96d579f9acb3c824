package dev.edgepatch.patchloader;

/**
 * The format's {@code "bilinear"} resize (spec: edgepatch/format/spec.rst, Float delta,
 * {@code task.preprocessing.resize}), exactly as the Python runtime and training compute it:
 * Pillow's BILINEAR filter, a triangle whose support grows with the downscale factor (so it
 * averages rather than skips pixels when shrinking), applied along x, then along y, in 8-bit
 * fixed point. Pure Java, no Android classes; the app feeds it {@code Bitmap.getPixels()}.
 *
 * <pre>{@code
 * int[] argb = new int[w * h];
 * bitmap.getPixels(argb, 0, w, 0, 0, w, h);
 * int[] input = ImageResampler.resizeArgb(argb, w, h, task.resolution(), task.resolution());
 * }</pre>
 */
public final class ImageResampler {
    private static final int PRECISION_BITS = 22; // 32 - 8 bits of result - 2 bits of headroom
    private static final int HALF = 1 << (PRECISION_BITS - 1);

    private ImageResampler() {
    }

    /**
     * {@code rgb}: {@code height} rows of {@code width} pixels, 3 bytes each (R, G, B); returns the
     * resized image in the same layout, {@code outWidth * outHeight * 3} bytes.
     */
    public static byte[] resizeRgb(byte[] rgb, int width, int height, int outWidth, int outHeight) {
        if (width < 1 || height < 1 || outWidth < 1 || outHeight < 1 || rgb.length != 3L * width * height) {
            throw new IllegalArgumentException("resizeRgb: " + rgb.length + " bytes for " + width + "x" + height
                    + " -> " + outWidth + "x" + outHeight);
        }
        byte[] image = rgb;
        if (outWidth != width) {
            image = pass(image, width, height, outWidth, true);
        }
        if (outHeight != height) {
            image = pass(image, height, outWidth, outHeight, false);
        }
        return image == rgb ? rgb.clone() : image;
    }

    /**
     * {@code argb}: packed 0xAARRGGBB pixels, row by row (as {@code Bitmap.getPixels} gives them). The
     * alpha is dropped, as the Python runtime's RGB conversion drops it; returned pixels are opaque.
     */
    public static int[] resizeArgb(int[] argb, int width, int height, int outWidth, int outHeight) {
        if ((long) width * height != argb.length) {
            throw new IllegalArgumentException("resizeArgb: " + argb.length + " pixels for " + width + "x" + height);
        }
        byte[] rgb = new byte[3 * argb.length];
        for (int i = 0; i < argb.length; i++) {
            rgb[3 * i] = (byte) (argb[i] >> 16);
            rgb[3 * i + 1] = (byte) (argb[i] >> 8);
            rgb[3 * i + 2] = (byte) argb[i];
        }
        byte[] resized = resizeRgb(rgb, width, height, outWidth, outHeight);
        int[] out = new int[outWidth * outHeight];
        for (int i = 0; i < out.length; i++) {
            out[i] = 0xFF000000 | (resized[3 * i] & 0xFF) << 16 | (resized[3 * i + 1] & 0xFF) << 8
                    | (resized[3 * i + 2] & 0xFF);
        }
        return out;
    }

    /**
     * One axis of {@code n} samples to {@code m}, on a packed RGB image of {@code lines} rows (x pass:
     * rows of n pixels) or {@code lines} columns (y pass: columns of n pixels).
     */
    private static byte[] pass(byte[] in, int n, int lines, int m, boolean alongX) {
        int[] lo = new int[m];
        int[][] weights = weights(n, m, lo);
        int step = alongX ? 3 : 3 * lines; // from one sample to the next along the axis
        int lineStep = alongX ? 3 * n : 3;
        int outStep = alongX ? 3 : 3 * lines;
        int outLineStep = alongX ? 3 * m : 3;
        byte[] out = new byte[3 * m * lines];
        for (int line = 0; line < lines; line++) {
            for (int i = 0; i < m; i++) {
                int[] k = weights[i];
                for (int c = 0; c < 3; c++) {
                    int sum = HALF;
                    int at = line * lineStep + lo[i] * step + c;
                    for (int j = 0; j < k.length; j++, at += step) {
                        sum += (in[at] & 0xFF) * k[j];
                    }
                    out[line * outLineStep + i * outStep + c] = clip8(sum);
                }
            }
        }
        return out;
    }

    /** Per output sample i: its first input sample (lo[i]) and fixed-point weights, as the spec defines them. */
    static int[][] weights(int n, int m, int[] lo) {
        double scale = (double) n / m;
        double filterScale = Math.max(scale, 1.0);
        double support = filterScale; // the triangle's support is 1, stretched by the downscale factor
        double ss = 1.0 / filterScale;
        int[][] weights = new int[m][];
        for (int i = 0; i < m; i++) {
            double center = (i + 0.5) * scale;
            int first = Math.max((int) (center - support + 0.5), 0);
            int last = Math.min((int) (center + support + 0.5), n);
            double[] w = new double[Math.max(last - first, 0)];
            double total = 0.0;
            for (int j = 0; j < w.length; j++) {
                double t = Math.abs((j + first - center + 0.5) * ss);
                w[j] = t < 1.0 ? 1.0 - t : 0.0;
                total += w[j];
            }
            int[] k = new int[w.length];
            for (int j = 0; j < w.length; j++) {
                double normal = total != 0.0 ? w[j] / total : w[j];
                k[j] = (int) (0.5 + normal * (1 << PRECISION_BITS));
            }
            lo[i] = first;
            weights[i] = k;
        }
        return weights;
    }

    private static byte clip8(int sum) {
        int value = sum >> PRECISION_BITS;
        return (byte) (value < 0 ? 0 : value > 255 ? 255 : value);
    }
}
