package dev.edgepatch.patchloader;

import java.util.List;

/**
 * Value rules of a float delta that no shape check catches: step 11 e (the head has one output per
 * class) and f (bounded site scales) of section "Float delta" in {@code edgepatch/format/spec.rst}.
 */
final class DeltaLimits {
    static final double MIN_ABS_SITE_SCALE = 1e-12;
    static final double MAX_ABS_SITE_SCALE = 1e12;

    private DeltaLimits() {
    }

    /** Step 11 e: a dense site is the task's head, with one output per class. */
    static void checkHead(List<String> classes, List<DeltaReader.SiteEntry> sites, String source)
            throws ShapeMismatchException {
        for (DeltaReader.SiteEntry site : sites) {
            if ("dense".equals(site.op) && site.channels != classes.size()) {
                throw new ShapeMismatchException(source + ": site " + Text.quote(site.name) + " is the task's head with "
                        + site.channels + " outputs, but meta.task.classes names " + classes.size() + " classes");
            }
        }
    }

    /** Step 11 f: every value of the packed scale tensor (as float32) has a bounded magnitude. */
    static void checkSiteScales(List<DeltaReader.SiteEntry> sites, float[] scales, String source)
            throws NonFiniteException {
        if (scales == null) {
            return;
        }
        for (int position = 0; position < scales.length; position++) {
            double magnitude = Math.abs((double) scales[position]);
            if (magnitude < MIN_ABS_SITE_SCALE || magnitude > MAX_ABS_SITE_SCALE) {
                throw outside(sites, position, source);
            }
        }
    }

    private static NonFiniteException outside(List<DeltaReader.SiteEntry> sites, int position, String source) {
        long channel = position;
        for (DeltaReader.SiteEntry site : sites) {
            if (!site.holds(TensorNames.SCALE)) {
                continue;
            }
            if (channel < site.channels) {
                return new NonFiniteException(source + ": tensor 'scale': site " + Text.quote(site.name) + " channel "
                        + channel + " has a scale outside 1e-12 <= |scale| <= 1e12 (zero, denormal or huge)");
            }
            channel -= site.channels;
        }
        throw new IllegalStateException("the packed scale is longer than its sites");
    }
}
