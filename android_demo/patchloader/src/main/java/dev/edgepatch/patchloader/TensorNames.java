package dev.edgepatch.patchloader;

/**
 * Tensor names of a site's roles, {@code site + "/" + role}: the rule of section "Site naming"
 * of the spec ({@code edgepatch/format/spec.rst}). The only place the loader spells it.
 */
final class TensorNames {
    static final String SEPARATOR = "/";
    static final String SCALE = "scale";
    static final String BIAS = "bias";
    static final String KERNEL = "kernel";
    /** The longest site name whose every role name (the longest: kernel) is a valid tensor name. */
    static final int MAX_SITE_NAME_BYTES = DeltaFormat.MAX_NAME_BYTES - (SEPARATOR + KERNEL).length();

    private TensorNames() {
    }

    /** The name of {@code site}'s {@code role} tensor. */
    static String of(String site, String role) {
        return site + SEPARATOR + role;
    }

    /** The site of {@code name} when it names that site's {@code role} (split at the last separator), else null. */
    static String siteOf(String name, String role) {
        int separator = name.lastIndexOf(SEPARATOR);
        if (separator < 0 || !name.substring(separator + SEPARATOR.length()).equals(role)) {
            return null;
        }
        return name.substring(0, separator);
    }
}
