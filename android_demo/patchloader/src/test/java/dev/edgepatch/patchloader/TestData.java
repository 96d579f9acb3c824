package dev.edgepatch.patchloader;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.nio.charset.Charset;
import java.util.List;
import java.util.Map;

/** The golden files made by {@code testdata/make_testdata.py} (Python pipeline and runtime). */
final class TestData {
    private TestData() {
    }

    static File dir() {
        File dir = new File(System.getProperty("edgepatch.testdata", "testdata"));
        if (!new File(dir, "golden.json").isFile()) {
            throw new IllegalStateException("test data not found in " + dir.getAbsolutePath()
                    + "; set -Dedgepatch.testdata=android_demo/patchloader/testdata");
        }
        return dir;
    }

    static byte[] bytes(String name) throws IOException {
        File file = new File(dir(), name);
        byte[] data = new byte[(int) file.length()];
        FileInputStream in = new FileInputStream(file);
        try {
            int filled = 0;
            while (filled < data.length) {
                int count = in.read(data, filled, data.length - filled);
                if (count < 0) {
                    throw new IOException("short read: " + file);
                }
                filled += count;
            }
        } finally {
            in.close();
        }
        return data;
    }

    @SuppressWarnings("unchecked")
    static List<Map<String, Object>> cases(String name) throws Exception {
        return (List<Map<String, Object>>) Json.parse(new String(bytes(name), Charset.forName("UTF-8")));
    }
}
