package dev.edgepatch.patchloader;

/** A delta tensor's shape does not fit the delta's own sites or the base it patches. */
public class ShapeMismatchException extends EdgepatchException {
    private static final long serialVersionUID = 1L;

    public ShapeMismatchException(String message) {
        super(message);
    }
}
