import org.apache.flink.api.common.JobID;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.CoreOptions;
import org.apache.flink.configuration.RestOptions;
import org.apache.flink.configuration.TaskManagerOptions;
import org.apache.flink.configuration.WebOptions;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.connector.datagen.source.GeneratorFunction;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.runtime.checkpoint.AbstractCheckpointStats;
import org.apache.flink.runtime.checkpoint.CheckpointStatsSnapshot;
import org.apache.flink.runtime.checkpoint.CheckpointStatsStatus;
import org.apache.flink.runtime.checkpoint.CompletedCheckpointStats;
import org.apache.flink.runtime.checkpoint.SubtaskStateStats;
import org.apache.flink.runtime.checkpoint.TaskStateStats;
import org.apache.flink.runtime.executiongraph.ArchivedExecutionGraph;
import org.apache.flink.runtime.jobgraph.JobGraph;
import org.apache.flink.runtime.minicluster.MiniCluster;
import org.apache.flink.runtime.minicluster.MiniClusterConfiguration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.graph.StreamGraph;
import org.apache.flink.util.Collector;

import java.io.File;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The slow-sink checkpoint benchmark, Flink side (Cairn's is
 * crates/cairn/benches/slow_sink_checkpoints.rs; both run the same job with the same keys).
 *
 * An unbounded generator (event i: key i % K), parallelism 2, keyBy(key), a running count
 * per key in ValueState, and a sink that takes a fixed time per record (1 ms): the sink's
 * task is the bottleneck and backpressures the keyed edge. Checkpoints every interval; after
 * the run time the job is cancelled and the completed checkpoints' end-to-end durations,
 * state sizes and persisted (in-flight) data are summarised in one line.
 *
 * usage: SlowSinkBench --seconds S [--parallelism P] [--keys K] [--sink-delay-us U]
 *                      [--interval-ms I] --ckpt-dir DIR [-D key=value ...]
 * The -D keys are Flink's own (execution.checkpointing.unaligned.enabled,
 * execution.checkpointing.aligned-checkpoint-timeout,
 * taskmanager.network.memory.buffer-debloat.enabled, ...), applied to the job and the
 * MiniCluster alike.
 */
public class SlowSinkBench {

    public static final class Gen implements GeneratorFunction<Long, Tuple2<Long, Long>> {
        private final long keys;

        Gen(long keys) {
            this.keys = keys;
        }

        @Override
        public Tuple2<Long, Long> map(Long i) {
            return Tuple2.of(i % keys, i);
        }
    }

    public static final class KeyOf implements KeySelector<Tuple2<Long, Long>, Long> {
        @Override
        public Long getKey(Tuple2<Long, Long> e) {
            return e.f0;
        }
    }

    /** Running count per key: (key, count). */
    public static final class Count extends KeyedProcessFunction<Long, Tuple2<Long, Long>, Tuple2<Long, Long>> {
        private transient ValueState<Long> count;

        @Override
        public void open(OpenContext ctx) {
            count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Types.LONG));
        }

        @Override
        public void processElement(Tuple2<Long, Long> e, Context ctx, Collector<Tuple2<Long, Long>> out)
                throws Exception {
            Long c = count.value();
            long n = (c == null ? 0L : c) + 1L;
            count.update(n);
            out.collect(Tuple2.of(e.f0, n));
        }
    }

    /** A sink that spends a fixed time on every record (an external system that is slow). */
    public static final class SlowSink implements Sink<Tuple2<Long, Long>> {
        private final long delayMicros;

        SlowSink(long delayMicros) {
            this.delayMicros = delayMicros;
        }

        @Override
        public SinkWriter<Tuple2<Long, Long>> createWriter(WriterInitContext context) {
            return new SinkWriter<Tuple2<Long, Long>>() {
                @Override
                public void write(Tuple2<Long, Long> element, Context ctx) throws InterruptedException {
                    Thread.sleep(delayMicros / 1000, (int) (delayMicros % 1000) * 1000);
                }

                @Override
                public void flush(boolean endOfInput) {}

                @Override
                public void close() {}
            };
        }
    }

    static long percentile(List<Long> sorted, double q) {
        if (sorted.isEmpty()) return -1;
        int rank = (int) Math.ceil(q * sorted.size());
        return sorted.get(Math.max(1, Math.min(rank, sorted.size())) - 1);
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = new HashMap<>();
        Map<String, String> flags = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            if (argv[i].equals("-D")) {
                String[] kv = argv[++i].split("=", 2);
                flags.put(kv[0], kv[1]);
            } else if (argv[i].startsWith("--")) {
                a.put(argv[i].substring(2), argv[++i]);
            } else {
                throw new IllegalArgumentException("bad argument " + argv[i]);
            }
        }
        long seconds = Long.parseLong(a.getOrDefault("seconds", "60"));
        int par = Integer.parseInt(a.getOrDefault("parallelism", "2"));
        long keys = Long.parseLong(a.getOrDefault("keys", "1000"));
        long delayMicros = Long.parseLong(a.getOrDefault("sink-delay-us", "1000"));
        long intervalMs = Long.parseLong(a.getOrDefault("interval-ms", "2000"));
        String mode = a.getOrDefault("mode", "custom");
        String ckptDir = a.get("ckpt-dir");

        Configuration conf = Configuration.fromMap(flags);
        conf.set(CoreOptions.DEFAULT_PARALLELISM, par);
        conf.set(CheckpointingOptions.CHECKPOINT_STORAGE, "filesystem");
        conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY, new File(ckptDir).toURI().toString());
        conf.set(CheckpointingOptions.CHECKPOINTING_INTERVAL, Duration.ofMillis(intervalMs));
        conf.set(CheckpointingOptions.CHECKPOINTING_CONSISTENCY_MODE, CheckpointingMode.EXACTLY_ONCE);
        conf.set(CheckpointingOptions.MAX_CONCURRENT_CHECKPOINTS, 1);
        conf.set(WebOptions.CHECKPOINTS_HISTORY_SIZE, 10_000);

        Configuration clusterConf = new Configuration(conf);
        clusterConf.set(RestOptions.BIND_ADDRESS, "127.0.0.1");
        clusterConf.set(RestOptions.ADDRESS, "127.0.0.1");
        clusterConf.set(RestOptions.BIND_PORT, "0");
        clusterConf.set(TaskManagerOptions.MANAGED_MEMORY_SIZE, MemorySize.parse("256m"));
        clusterConf.set(TaskManagerOptions.NUM_TASK_SLOTS, par);
        MiniClusterConfiguration mcc = new MiniClusterConfiguration.Builder()
                .setConfiguration(clusterConf)
                .setNumTaskManagers(1)
                .setNumSlotsPerTaskManager(par)
                .setCommonBindAddress("127.0.0.1")
                .build();

        StreamExecutionEnvironment env = new StreamExecutionEnvironment(conf);
        DataGeneratorSource<Tuple2<Long, Long>> src = new DataGeneratorSource<>(
                new Gen(keys), Long.MAX_VALUE, RateLimiterStrategy.noOp(), Types.TUPLE(Types.LONG, Types.LONG));
        env.fromSource(src, WatermarkStrategy.noWatermarks(), "gen").uid("gen")
                .keyBy(new KeyOf(), Types.LONG)
                .process(new Count(), Types.TUPLE(Types.LONG, Types.LONG)).uid("count").name("count")
                .sinkTo(new SlowSink(delayMicros)).uid("sink").name("slow sink");
        StreamGraph sg = env.getStreamGraph();
        sg.setJobName("slow-sink-" + mode);
        JobGraph jg = sg.getJobGraph(SlowSinkBench.class.getClassLoader(), null);

        try (MiniCluster mc = new MiniCluster(mcc)) {
            mc.start();
            JobID jobId = mc.submitJob(jg).get().getJobID();
            Thread.sleep(seconds * 1000);
            mc.cancelJob(jobId).get();
            mc.requestJobResult(jobId).get();
            ArchivedExecutionGraph g = mc.getArchivedExecutionGraph(jobId).get();
            CheckpointStatsSnapshot st = g.getCheckpointStatsSnapshot();
            List<Long> e2e = new ArrayList<>();
            List<Long> state = new ArrayList<>();
            List<Long> persisted = new ArrayList<>();
            long alignMax = 0;
            int unaligned = 0;
            for (AbstractCheckpointStats c : st.getHistory().getCheckpoints()) {
                if (c.getStatus() != CheckpointStatsStatus.COMPLETED) continue;
                CompletedCheckpointStats cc = (CompletedCheckpointStats) c;
                e2e.add(cc.getEndToEndDuration());
                state.add(cc.getStateSize());
                persisted.add(cc.getPersistedData());
                if (cc.isUnalignedCheckpoint()) unaligned++;
                for (TaskStateStats t : cc.getAllTaskStateStats()) {
                    for (SubtaskStateStats s : t.getSubtaskStats()) {
                        if (s != null) alignMax = Math.max(alignMax, s.getAlignmentDuration());
                    }
                }
            }
            Collections.sort(e2e);
            Collections.sort(state);
            Collections.sort(persisted);
            long failed = st.getCounts().getNumberOfFailedCheckpoints();
            System.out.printf("engine=flink-2.3.0 mode=%s seconds=%d checkpoints=%d unaligned=%d failed=%d "
                            + "e2e_ms_p50=%d e2e_ms_max=%d state_bytes_p50=%d persisted_bytes_p50=%d "
                            + "persisted_bytes_max=%d alignment_ms_max=%d e2e_ms_all=%s%n",
                    mode, seconds, e2e.size(), unaligned, failed, percentile(e2e, 0.5), percentile(e2e, 1.0),
                    percentile(state, 0.5), percentile(persisted, 0.5), percentile(persisted, 1.0), alignMax,
                    e2e.toString().replace(" ", ""));
        }
    }
}
