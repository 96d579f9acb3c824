package dev.edgepatch.patchloader;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.Arrays;

/** Reads a whole regular file after checking its size, never more than a limit, optionally in gated stages. */
final class FileBytes {
    /** Checks the size the file system reports, before anything is read. */
    interface SizeCheck {
        void check(long size, String path) throws EdgepatchException;
    }

    /**
     * Checks the first bytes before more are read: given the first {@code filled} bytes of {@code data},
     * returns how many more to read before it is called again, 0 to read the rest.
     */
    interface Gate {
        int next(byte[] data, int filled, long size, String path) throws EdgepatchException;
    }

    private FileBytes() {
    }

    static byte[] read(File file, long limit, SizeCheck sizeCheck) throws EdgepatchException, IOException {
        return read(file, limit, sizeCheck, null);
    }

    /** As {@link #read(File, long, SizeCheck)}, reading only what {@code gate} allows until it returns 0. */
    static byte[] read(File file, long limit, SizeCheck sizeCheck, Gate gate) throws EdgepatchException, IOException {
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
        long size = file.length();
        sizeCheck.check(size, path);
        InputStream in = new FileInputStream(file);
        try {
            byte[] data = new byte[0];
            int filled = 0;
            int want = gate == null ? 0 : gate.next(data, 0, size, path);
            while (want > 0) {
                data = Arrays.copyOf(data, filled + want);
                filled = fill(in, data, filled);
                if (filled < data.length) { // shorter than fstat said: the decoder reports it
                    return Arrays.copyOf(data, filled);
                }
                want = gate.next(data, filled, size, path);
            }
            // The rest of what is there now, up to limit + 1 bytes: a file that grew is caught by the decoder.
            data = Arrays.copyOf(data, (int) Math.min(limit + 1, Math.max(size, filled)));
            while (true) {
                filled = fill(in, data, filled);
                if (filled < data.length || data.length > limit) {
                    break;
                }
                data = Arrays.copyOf(data, (int) Math.min(limit + 1, Math.max(16L, data.length * 2L)));
            }
            return filled == data.length ? data : Arrays.copyOf(data, filled);
        } finally {
            in.close();
        }
    }

    /** Reads into {@code data} from {@code filled} until it is full or the stream ends; returns the new fill. */
    private static int fill(InputStream in, byte[] data, int filled) throws IOException {
        while (filled < data.length) {
            int count = in.read(data, filled, data.length - filled);
            if (count < 0) {
                break;
            }
            filled += count;
        }
        return filled;
    }
}
