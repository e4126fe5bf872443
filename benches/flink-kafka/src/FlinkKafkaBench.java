import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.serialization.SimpleStringSchema;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.RestOptions;
import org.apache.flink.configuration.StateBackendOptions;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.connector.kafka.sink.KafkaSink;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.util.Collector;

import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;

/**
 * Kafka -> keyed count -> Kafka, the Flink side of Cairn's Kafka benchmark (the same job as
 * crates/cairn/benches/kafka_keyed_count.rs): input "key sendTime", a ValueState count per key,
 * output "key count sendTime". Parallelism 2, hashmap state, checkpoints every 1 s
 * (exactly-once, aligned) in a local MiniCluster.
 *
 * Args: --bootstrap B --input T --output T --guarantee at-least-once|exactly-once
 *       --bounded true|false --ckpt-dir DIR
 */
public class FlinkKafkaBench {
    static final class Count extends KeyedProcessFunction<String, String, String> {
        private transient ValueState<Long> count;

        @Override
        public void open(OpenContext ctx) {
            count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Types.LONG));
        }

        @Override
        public void processElement(String line, Context ctx, Collector<String> out) throws Exception {
            int sp = line.indexOf(' ');
            Long c = count.value();
            long n = (c == null ? 0 : c) + 1;
            count.update(n);
            out.collect(line.substring(0, sp) + " " + n + line.substring(sp));
        }
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) a.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
        String bootstrap = a.get("bootstrap");
        boolean bounded = Boolean.parseBoolean(a.getOrDefault("bounded", "false"));
        String guarantee = a.getOrDefault("guarantee", "at-least-once");

        Configuration conf = new Configuration();
        conf.set(RestOptions.BIND_PORT, "0");
        conf.set(StateBackendOptions.STATE_BACKEND, "hashmap");
        conf.set(CheckpointingOptions.CHECKPOINT_STORAGE, "filesystem");
        conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY, "file://" + a.get("ckpt-dir"));
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
        env.setParallelism(2);
        env.enableCheckpointing(1000, CheckpointingMode.EXACTLY_ONCE);

        var sb = KafkaSource.<String>builder()
                .setBootstrapServers(bootstrap)
                .setTopics(a.get("input"))
                .setGroupId("flink-bench-" + System.nanoTime())
                .setStartingOffsets(OffsetsInitializer.earliest())
                .setValueOnlyDeserializer(new SimpleStringSchema());
        if (bounded) sb.setBounded(OffsetsInitializer.latest());
        Properties producer = new Properties();
        producer.setProperty("linger.ms", "5");
        producer.setProperty("transaction.timeout.ms", "60000");
        KafkaSink<String> sink = KafkaSink.<String>builder()
                .setBootstrapServers(bootstrap)
                .setKafkaProducerConfig(producer)
                .setRecordSerializer(KafkaRecordSerializationSchema.builder()
                        .setTopic(a.get("output"))
                        .setValueSerializationSchema(new SimpleStringSchema())
                        .build())
                .setDeliveryGuarantee(guarantee.equals("exactly-once")
                        ? DeliveryGuarantee.EXACTLY_ONCE : DeliveryGuarantee.AT_LEAST_ONCE)
                .setTransactionalIdPrefix("flink-bench-" + System.nanoTime())
                .build();
        env.fromSource(sb.build(), WatermarkStrategy.noWatermarks(), "kafka-in").uid("kafka-in")
                .keyBy(l -> l.substring(0, l.indexOf(' ')))
                .process(new Count()).uid("counter")
                .sinkTo(sink).uid("kafka-out");

        long start = System.nanoTime();
        JobClient job = env.executeAsync("flink kafka keyed count");
        System.err.println("FLINK started " + job.getJobID());
        job.getJobExecutionResult().get();
        double secs = (System.nanoTime() - start) / 1e9;
        System.out.printf("engine=flink guarantee=%s seconds=%.2f%n", guarantee, secs);
    }
}
