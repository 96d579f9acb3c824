package dev.edgepatch.demo;

import android.graphics.Bitmap;
import android.graphics.Color;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/** Bitmap to the model input: center square crop, resize, pixel (0..255) * scale + offset. */
final class ImageInput {
    private ImageInput() {
    }

    /** [1, size, size, 3] float32, native order, RGB. */
    static ByteBuffer toInput(Bitmap image, int size, double scale, double offset) {
        int side = Math.min(image.getWidth(), image.getHeight());
        Bitmap square = Bitmap.createBitmap(image, (image.getWidth() - side) / 2, (image.getHeight() - side) / 2,
                side, side);
        Bitmap scaled = Bitmap.createScaledBitmap(square, size, size, true);
        int[] pixels = new int[size * size];
        scaled.getPixels(pixels, 0, size, 0, 0, size, size);
        ByteBuffer input = ByteBuffer.allocateDirect(4 * 3 * size * size).order(ByteOrder.nativeOrder());
        for (int pixel : pixels) {
            input.putFloat((float) (Color.red(pixel) * scale + offset));
            input.putFloat((float) (Color.green(pixel) * scale + offset));
            input.putFloat((float) (Color.blue(pixel) * scale + offset));
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
