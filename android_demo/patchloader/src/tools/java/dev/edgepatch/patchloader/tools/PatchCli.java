package dev.edgepatch.patchloader.tools;

import dev.edgepatch.patchloader.Delta;
import dev.edgepatch.patchloader.EdgepatchException;
import dev.edgepatch.patchloader.TaskDelta;
import dev.edgepatch.patchloader.TfliteBase;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;

/**
 * Command-line front end of the patch loader, for tests and scripts on a desktop JVM.
 *
 * <pre>
 * patchcli apply BASE.tflite TASK.delta OUT.tflite   write the patched model
 * patchcli verify TASK.delta...                      verify deltas on their own
 * patchcli verify --base BASE.tflite TASK.delta...   verify deltas and apply each to BASE
 * </pre>
 *
 * A delta is a float delta or an int8 delta (for an int8 base), whichever the file is.
 * {@code apply} prints one JSON line to stdout; an expected failure prints one line,
 * {@code error: <ExceptionClass>: <message>}, to stderr and exits 1. {@code verify} prints
 * one JSON line per file, {@code {"file": ..., "task": ...}} (with {@code --base} also
 * {@code "sha256"} of the patched model) or {@code {"file": ..., "error": <ExceptionClass>,
 * "message": ...}}, and exits 1 if any file failed. Usage errors exit 2.
 */
public final class PatchCli {
    private static final String USAGE = "usage: patchcli apply BASE.tflite TASK.delta OUT.tflite\n"
            + "       patchcli verify [--base BASE.tflite] TASK.delta...\n"
            + "example: patchcli apply ship/base.tflite ship/flowers.delta /tmp/flowers.tflite";

    private PatchCli() {
    }

    public static void main(String[] args) {
        System.exit(run(args));
    }

    static int run(String[] args) {
        boolean apply = args.length == 4 && "apply".equals(args[0]);
        boolean withBase = args.length >= 2 && "--base".equals(args[1]);
        boolean verify = args.length >= (withBase ? 4 : 2) && "verify".equals(args[0]);
        if (!apply && !verify) {
            System.err.println(USAGE);
            return 2;
        }
        try {
            if (verify) {
                return verify(args, withBase ? TfliteBase.load(new File(args[2])) : null, withBase ? 3 : 1);
            }
            TfliteBase base = TfliteBase.load(new File(args[1]));
            TaskDelta delta = TaskDelta.read(new File(args[2]));
            ByteBuffer model = base.apply(delta);
            write(model, new File(args[3]));
            System.out.println(summary(delta, base, args[3]));
            return 0;
        } catch (EdgepatchException error) {
            System.err.println("error: " + error.getClass().getSimpleName() + ": " + error.getMessage());
            return 1;
        } catch (IOException error) {
            System.err.println("error: IOException: " + error.getMessage());
            return 1;
        }
    }

    private static int verify(String[] args, TfliteBase base, int first) {
        int failures = 0;
        for (int i = first; i < args.length; i++) {
            String line;
            try {
                TaskDelta delta = TaskDelta.read(new File(args[i]));
                String patched = base == null ? "" : ", \"sha256\": " + quote(sha256(base.apply(delta)));
                line = "{\"file\": " + quote(args[i]) + ", \"task\": " + quote(delta.task().name()) + patched + "}";
            } catch (EdgepatchException error) {
                failures++;
                line = "{\"file\": " + quote(args[i]) + ", \"error\": " + quote(error.getClass().getSimpleName())
                        + ", \"message\": " + quote(error.getMessage()) + "}";
            } catch (IOException error) {
                failures++;
                line = "{\"file\": " + quote(args[i]) + ", \"error\": \"IOException\", \"message\": "
                        + quote(String.valueOf(error.getMessage())) + "}";
            }
            System.out.println(line);
        }
        return failures == 0 ? 0 : 1;
    }

    private static void write(ByteBuffer model, File out) throws IOException {
        FileOutputStream stream = new FileOutputStream(out);
        try {
            FileChannel channel = stream.getChannel();
            while (model.hasRemaining()) {
                channel.write(model);
            }
        } finally {
            stream.close();
        }
    }

    private static String summary(TaskDelta delta, TfliteBase base, String out) {
        String kind = delta instanceof Delta ? "\"delta\", \"sites\": " + ((Delta) delta).sites().size()
                : "\"int8_delta\"";
        return "{\"task\": " + quote(delta.task().name()) + ", \"kind\": " + kind
                + ", \"base_sha256\": " + quote(base.sha256()) + ", \"bytes\": " + base.size()
                + ", \"out\": " + quote(out) + "}";
    }

    private static String sha256(ByteBuffer model) {
        try {
            MessageDigest digest = MessageDigest.getInstance("SHA-256");
            digest.update(model);
            StringBuilder hex = new StringBuilder();
            for (byte b : digest.digest()) {
                hex.append(String.format("%02x", b & 0xff));
            }
            return hex.toString();
        } catch (NoSuchAlgorithmException error) {
            throw new IllegalStateException("this JVM has no SHA-256", error);
        }
    }

    private static String quote(String text) {
        StringBuilder out = new StringBuilder("\"");
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20 || c > 0x7e) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }
}
