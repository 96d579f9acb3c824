package dev.edgepatch.demo;

import android.content.res.AssetFileDescriptor;
import android.content.res.AssetManager;
import dev.edgepatch.patchloader.EdgepatchException;
import dev.edgepatch.patchloader.TfliteBase;
import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;

/**
 * The shared base and the task deltas bundled in {@code assets/edgepatch/}. The base is
 * memory-mapped from the APK, which works only because the build stores {@code .tflite}
 * uncompressed ({@code noCompress}); it is read and indexed once.
 */
final class TaskCatalog {
    static final String DIR = "edgepatch";
    static final String BASE = "base.tflite";

    final TfliteBase base;
    final List<String> deltas; // file names, sorted
    private final AssetManager assets;

    private TaskCatalog(AssetManager assets, TfliteBase base, List<String> deltas) {
        this.assets = assets;
        this.base = base;
        this.deltas = deltas;
    }

    static TaskCatalog open(AssetManager assets) throws IOException, EdgepatchException {
        AssetFileDescriptor descriptor = assets.openFd(DIR + "/" + BASE); // throws if stored compressed
        MappedByteBuffer mapped;
        FileInputStream in = descriptor.createInputStream();
        try {
            mapped = in.getChannel().map(FileChannel.MapMode.READ_ONLY, descriptor.getStartOffset(),
                    descriptor.getDeclaredLength());
        } finally {
            in.close(); // the mapping stays valid
        }
        TfliteBase base = TfliteBase.load(mapped, "assets/" + DIR + "/" + BASE);
        List<String> deltas = new ArrayList<String>();
        String[] names = assets.list(DIR);
        for (String name : names == null ? new String[0] : names) {
            if (name.endsWith(".delta")) {
                deltas.add(name);
            }
        }
        Collections.sort(deltas);
        return new TaskCatalog(assets, base, Collections.unmodifiableList(deltas));
    }

    /** A delta file's bytes (small: kilobytes to a few megabytes). */
    byte[] deltaBytes(String name) throws IOException {
        InputStream in = assets.open(DIR + "/" + name);
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] chunk = new byte[64 * 1024];
            for (int count = in.read(chunk); count >= 0; count = in.read(chunk)) {
                out.write(chunk, 0, count);
            }
            return out.toByteArray();
        } finally {
            in.close();
        }
    }

    static String taskLabel(String deltaName) {
        return deltaName.substring(0, deltaName.length() - ".delta".length());
    }

    static List<String> labels(List<String> deltaNames) {
        String[] labels = new String[deltaNames.size()];
        for (int i = 0; i < labels.length; i++) {
            labels[i] = taskLabel(deltaNames.get(i));
        }
        return Arrays.asList(labels);
    }
}
