package dev.edgepatch.patchloader;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.Arrays;

/** Reads a whole regular file after checking its size, never more than a limit. */
final class FileBytes {
    /** Checks the size the file system reports, before anything is read. */
    interface SizeCheck {
        void check(long size, String path) throws EdgepatchException;
    }

    private FileBytes() {
    }

    static byte[] read(File file, long limit, SizeCheck sizeCheck) throws EdgepatchException, IOException {
        String path = file.getPath();
        if (!file.exists()) {
            throw new MissingFileException(path + ": no such file");
        }
        if (file.isDirectory()) {
            throw new MissingFileException(path + ": is a directory, not a file");
        }
        if (!file.isFile()) {
            throw new MissingFileException(path + ": is not a regular file");
        }
        sizeCheck.check(file.length(), path);
        InputStream in = new FileInputStream(file);
        try {
            // Read what is there now, up to limit + 1 bytes: a file that grew is caught by the decoder.
            byte[] data = new byte[(int) Math.min(limit + 1, Math.max(file.length(), 0))];
            int filled = 0;
            while (true) {
                if (filled == data.length) {
                    if (data.length > limit) {
                        break;
                    }
                    data = Arrays.copyOf(data, (int) Math.min(limit + 1, Math.max(16L, data.length * 2L)));
                }
                int count = in.read(data, filled, data.length - filled);
                if (count < 0) {
                    break;
                }
                filled += count;
            }
            return filled == data.length ? data : Arrays.copyOf(data, filled);
        } finally {
            in.close();
        }
    }
}
