package dev.edgepatch.patchloader;

/** A base {@code .tflite} file is malformed or lacks edgepatch sites. */
public class BaseModelException extends EdgepatchException {
    private static final long serialVersionUID = 1L;

    public BaseModelException(String message) {
        super(message);
    }
}
