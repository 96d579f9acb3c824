package dev.edgepatch.demo;

import android.app.Activity;
import android.content.Intent;
import android.graphics.Bitmap;
import android.graphics.BitmapFactory;
import android.net.Uri;
import android.os.Bundle;
import android.view.View;
import android.widget.AdapterView;
import android.widget.ArrayAdapter;
import android.widget.ImageView;
import android.widget.Spinner;
import android.widget.TextView;
import dev.edgepatch.patchloader.Delta;
import dev.edgepatch.patchloader.EdgepatchException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * The demo's screen: pick a task and a resolution, see the top-k result, the swap time and
 * the inference latency. All model work runs on one worker thread. The runtime is plugged
 * in by a subclass ({@link MainActivity}, the only class that calls LiteRT).
 */
public abstract class DemoActivity extends Activity {
    private static final List<Integer> RESOLUTIONS = Arrays.asList(96, 128, 160, 192, 224);
    private static final int THREADS = 1;
    private static final int TIMED_RUNS = 10;
    private static final int TOP_K = 3;
    private static final int PICK_IMAGE = 1;

    private final ExecutorService worker = Executors.newSingleThreadExecutor();
    private Spinner taskPicker;
    private Spinner resolutionPicker;
    private ImageView imageView;
    private TextView result;
    private TextView timing;
    private TaskCatalog catalog; // worker thread only
    private TaskSwitcher switcher; // worker thread only
    private String liveDelta; // worker thread only: the delta file of the live task
    private volatile Bitmap image;
    private volatile String swapLine = "";

    /** The inference runtime this build uses. */
    protected abstract Classifier.Factory classifierFactory();

    @Override
    protected void onCreate(Bundle state) {
        super.onCreate(state);
        setContentView(R.layout.activity_main);
        taskPicker = (Spinner) findViewById(R.id.task);
        resolutionPicker = (Spinner) findViewById(R.id.resolution);
        imageView = (ImageView) findViewById(R.id.image);
        result = (TextView) findViewById(R.id.result);
        timing = (TextView) findViewById(R.id.timing);
        image = ImageInput.testPattern();
        imageView.setImageBitmap(image);
        resolutionPicker.setAdapter(adapter(RESOLUTIONS));
        resolutionPicker.setSelection(RESOLUTIONS.size() - 1);
        findViewById(R.id.pick).setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View view) {
                Intent pick = new Intent(Intent.ACTION_GET_CONTENT).setType("image/*");
                startActivityForResult(pick, PICK_IMAGE);
            }
        });
        findViewById(R.id.run).setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View view) {
                runSelected();
            }
        });
        worker.execute(new Runnable() {
            @Override
            public void run() {
                openCatalog();
            }
        });
    }

    private <T> ArrayAdapter<T> adapter(List<T> items) {
        ArrayAdapter<T> adapter = new ArrayAdapter<T>(this, android.R.layout.simple_spinner_item, items);
        adapter.setDropDownViewResource(android.R.layout.simple_spinner_dropdown_item);
        return adapter;
    }

    private void openCatalog() {
        try {
            catalog = TaskCatalog.open(getAssets());
            switcher = new TaskSwitcher(catalog.base, classifierFactory(), THREADS);
        } catch (IOException error) {
            show(getString(R.string.no_assets) + "\n" + error.getMessage(), "");
            return;
        } catch (EdgepatchException error) {
            show(error.getClass().getSimpleName() + ": " + error.getMessage(), "");
            return;
        }
        runOnUiThread(new Runnable() {
            @Override
            public void run() {
                taskPicker.setAdapter(adapter(TaskCatalog.labels(catalog.deltas)));
                AdapterView.OnItemSelectedListener changed = new AdapterView.OnItemSelectedListener() {
                    @Override
                    public void onItemSelected(AdapterView<?> parent, View view, int position, long id) {
                        runSelected();
                    }

                    @Override
                    public void onNothingSelected(AdapterView<?> parent) {
                    }
                };
                taskPicker.setOnItemSelectedListener(changed);
                resolutionPicker.setOnItemSelectedListener(changed);
            }
        });
    }

    private void runSelected() {
        if (taskPicker.getSelectedItemPosition() < 0) {
            return;
        }
        final int task = taskPicker.getSelectedItemPosition();
        final int resolution = RESOLUTIONS.get(resolutionPicker.getSelectedItemPosition());
        worker.execute(new Runnable() {
            @Override
            public void run() {
                classify(catalog.deltas.get(task), resolution);
            }
        });
    }

    /** Worker thread: swap to the task if it changed, then classify the image and time it. */
    private void classify(String deltaName, int resolution) {
        try {
            if (!deltaName.equals(liveDelta)) {
                TaskSwitcher.Swap swap = switcher.swapTo(catalog.deltaBytes(deltaName), deltaName, resolution);
                liveDelta = deltaName;
                swapLine = String.format(Locale.US, "swap %.1f ms = decode %.1f + patch %.1f + interpreter %.1f",
                        swap.totalMs(), swap.decodeMs, swap.patchMs, swap.createMs);
            }
            Delta delta = switcher.currentDelta();
            Delta.Task task = delta.task();
            ByteBuffer input = ImageInput.toInput(image, resolution, task.pixelOrder(), task.preprocessingScale(),
                    task.preprocessingOffset());
            Classifier classifier = switcher.current();
            float[] logits = classifier.run(input, resolution); // warm-up; resizes if the resolution changed
            double[] ms = new double[TIMED_RUNS];
            for (int i = 0; i < ms.length; i++) {
                long start = System.nanoTime();
                logits = classifier.run(input, resolution);
                ms[i] = (System.nanoTime() - start) / 1e6;
            }
            show(topK(delta, logits), String.format(Locale.US, "%s\ninference %.1f ms (median of %d) at %d px, %d thread",
                    swapLine, Scores.median(ms), TIMED_RUNS, resolution, THREADS));
        } catch (EdgepatchException error) {
            show(error.getClass().getSimpleName() + ": " + error.getMessage(), "");
        } catch (IOException error) {
            show("cannot read " + deltaName + ": " + error.getMessage(), "");
        }
    }

    private static String topK(Delta delta, float[] logits) {
        List<String> classes = delta.task().classes();
        float[] probabilities = Scores.softmax(logits, classes.size());
        StringBuilder text = new StringBuilder(delta.task().name()).append('\n');
        int[] best = Scores.topK(probabilities, TOP_K);
        for (int rank = 0; rank < best.length; rank++) {
            text.append(String.format(Locale.US, "%d. %s  %.1f%%%n", rank + 1, classes.get(best[rank]),
                    100 * probabilities[best[rank]]));
        }
        return text.toString();
    }

    private void show(final String resultText, final String timingText) {
        runOnUiThread(new Runnable() {
            @Override
            public void run() {
                result.setText(resultText);
                timing.setText(timingText);
            }
        });
    }

    @Override
    protected void onActivityResult(int request, int code, Intent data) {
        super.onActivityResult(request, code, data);
        if (request != PICK_IMAGE || code != RESULT_OK || data == null || data.getData() == null) {
            return;
        }
        Bitmap picked = decode(data.getData());
        if (picked != null) {
            image = picked;
            imageView.setImageBitmap(picked);
            runSelected();
        }
    }

    private Bitmap decode(Uri uri) {
        try {
            InputStream in = getContentResolver().openInputStream(uri);
            try {
                BitmapFactory.Options options = new BitmapFactory.Options();
                options.inSampleSize = 4; // photos are large; the model needs at most 224 px
                return BitmapFactory.decodeStream(in, null, options);
            } finally {
                if (in != null) {
                    in.close();
                }
            }
        } catch (IOException error) {
            result.setText("cannot read image: " + error.getMessage());
            return null;
        }
    }

    @Override
    protected void onDestroy() {
        worker.execute(new Runnable() {
            @Override
            public void run() {
                if (switcher != null) {
                    switcher.close();
                }
            }
        });
        worker.shutdown();
        super.onDestroy();
    }
}
