package dev.edgepatch.patchloader;

/** A delta tensor holds NaN or Inf values. */
public class NonFiniteException extends EdgepatchException {
    private static final long serialVersionUID = 1L;

    public NonFiniteException(String message) {
        super(message);
    }
}
