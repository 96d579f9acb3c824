package dev.edgepatch.demo;

import android.graphics.Bitmap;
import android.graphics.Color;
import dev.edgepatch.patchloader.ImageResampler;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * Bitmap to the model input: the whole image resized to size x size with the format's "bilinear"
 * filter ({@link ImageResampler}, bit for bit the pixels the task was trained on; no crop, aspect not
 * kept, as the Python runtime does), then per model channel c pixel[order[c]] (0..255) * scale[c] +
 * offset[c], as the task's delta records it.
 */
final class ImageInput {
    private ImageInput() {
    }

    /** [1, size, size, 3] float32, native order; {@code order[c]}: the RGB channel model channel c reads. */
    static ByteBuffer toInput(Bitmap image, int size, int[] order, double[] scale, double[] offset) {
        int width = image.getWidth();
        int height = image.getHeight();
        int[] source = new int[width * height];
        image.getPixels(source, 0, width, 0, 0, width, height);
        int[] pixels = ImageResampler.resizeArgb(source, width, height, size, size);
        ByteBuffer input = ByteBuffer.allocateDirect(4 * 3 * size * size).order(ByteOrder.nativeOrder());
        float[] rgb = new float[3];
        for (int pixel : pixels) {
            rgb[0] = Color.red(pixel);
            rgb[1] = Color.green(pixel);
            rgb[2] = Color.blue(pixel);
            for (int c = 0; c < 3; c++) { // float32 arithmetic, as the Python runtime does
                input.putFloat(rgb[order[c]] * (float) scale[c] + (float) offset[c]);
            }
        }
        input.rewind();
        return input;
    }

    /** A colourful test pattern, shown until the user picks a photo. */
    static Bitmap testPattern() {
        int size = 256;
        int[] pixels = new int[size * size];
        for (int y = 0; y < size; y++) {
            for (int x = 0; x < size; x++) {
                pixels[y * size + x] = Color.rgb(x, y, (x * y) & 0xff);
            }
        }
        return Bitmap.createBitmap(pixels, size, size, Bitmap.Config.ARGB_8888);
    }
}
