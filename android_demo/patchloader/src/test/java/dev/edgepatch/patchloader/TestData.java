package dev.edgepatch.patchloader;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.nio.charset.Charset;
import java.util.List;
import java.util.Map;

/**
 * The files made by {@code testdata/make_testdata.py} (Python pipeline and runtime): the golden
 * files in {@code testdata/}, and the bad-input corpus in the repository's {@code tests/corpus/},
 * which the Python suite reads too (its README gives the format).
 */
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

    static File corpusDir() {
        File dir = new File(System.getProperty("edgepatch.corpus", "../../tests/corpus"));
        if (!new File(dir, "bad.json").isFile()) {
            throw new IllegalStateException("bad-input corpus not found in " + dir.getAbsolutePath()
                    + "; set -Dedgepatch.corpus=tests/corpus");
        }
        return dir;
    }

    /** A file the corpus names: its own files sit under bad/; the others are golden files. */
    static byte[] corpusBytes(String name) throws IOException {
        return read(new File(name.startsWith("bad/") ? corpusDir() : dir(), name));
    }

    static byte[] bytes(String name) throws IOException {
        return read(new File(dir(), name));
    }

    private static byte[] read(File file) throws IOException {
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

    static List<Map<String, Object>> cases(String name) throws Exception {
        return parse(bytes(name));
    }

    /** The corpus's expectations: bad.json. */
    static List<Map<String, Object>> corpusCases() throws Exception {
        return parse(read(new File(corpusDir(), "bad.json")));
    }

    @SuppressWarnings("unchecked")
    private static List<Map<String, Object>> parse(byte[] json) throws Exception {
        return (List<Map<String, Object>>) Json.parse(new String(json, Charset.forName("UTF-8")));
    }
}
