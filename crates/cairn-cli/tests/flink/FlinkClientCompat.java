// Drives a running Cairn job with Flink 2.3's own REST client
// (RestClusterClient: what the Flink Kubernetes Operator and other Flink
// tooling use). Run by crates/cairn-cli/tests/flink_compat.rs. Prints one
// line per operation: "OK\t<operation>\t<detail>" or "FAIL\t<operation>\t<why>";
// exits 1 if any failed.
//
//   java -cp <flink-clients classpath>:<classes> FlinkClientCompat run <port> <jobId> <savepointDir>
//   java ... FlinkClientCompat cancel <port> <jobId> <savepointToDispose>

import java.util.Collection;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.flink.api.common.JobID;
import org.apache.flink.api.common.JobStatus;
import org.apache.flink.client.deployment.StandaloneClusterId;
import org.apache.flink.client.program.rest.RestClusterClient;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.RestOptions;
import org.apache.flink.core.execution.CheckpointType;
import org.apache.flink.core.execution.SavepointFormatType;
import org.apache.flink.runtime.client.JobStatusMessage;
import org.apache.flink.runtime.jobmaster.JobResult;
import org.apache.flink.runtime.rest.messages.job.JobDetailsInfo;
import org.apache.flink.runtime.rest.util.RestClientException;

public class FlinkClientCompat {
    static boolean failed = false;

    interface Op<T> { T call() throws Exception; }

    static <T> T step(String name, Op<T> op, java.util.function.Function<T, String> describe) {
        try {
            T v = op.call();
            System.out.println("OK\t" + name + "\t" + describe.apply(v));
            return v;
        } catch (Throwable t) {
            failed = true;
            StringBuilder why = new StringBuilder();
            for (Throwable c = t; c != null; c = c.getCause()) {
                why.append(c.getClass().getName()).append(": ").append(String.valueOf(c.getMessage()).replace('\n', ' ')).append(" <- ");
            }
            System.out.println("FAIL\t" + name + "\t" + why);
            return null;
        }
    }

    public static void main(String[] args) throws Exception {
        String mode = args[0];
        int port = Integer.parseInt(args[1]);
        JobID job = JobID.fromHexString(args[2]);
        String path = args[3];
        Configuration conf = new Configuration();
        conf.set(RestOptions.ADDRESS, "127.0.0.1");
        conf.set(RestOptions.PORT, port);
        conf.set(RestOptions.RETRY_MAX_ATTEMPTS, 0);
        long t = 120;
        try (RestClusterClient<StandaloneClusterId> client =
                new RestClusterClient<>(conf, StandaloneClusterId.getInstance())) {
            if (mode.equals("run")) {
                step("listJobs", () -> client.listJobs().get(t, TimeUnit.SECONDS), (Collection<JobStatusMessage> jobs) -> {
                    StringBuilder b = new StringBuilder();
                    for (JobStatusMessage m : jobs) b.append(m.getJobId()).append('=').append(m.getJobState()).append(' ').append(m.getJobName()).append(';');
                    return b.toString();
                });
                step("getJobDetails", () -> client.getJobDetails(job).get(t, TimeUnit.SECONDS), (JobDetailsInfo d) ->
                        d.getJobId() + " " + d.getJobStatus() + " vertices=" + d.getJobVertexInfos().size());
                step("getJobStatus", () -> client.getJobStatus(job).get(t, TimeUnit.SECONDS), (JobStatus s) -> s.name());
                step("triggerSavepoint", () -> client.triggerSavepoint(job, path, SavepointFormatType.CANONICAL).get(t, TimeUnit.SECONDS), (String p) -> p);
                step("triggerCheckpoint", () -> client.triggerCheckpoint(job, CheckpointType.FULL).get(t, TimeUnit.SECONDS), (Long id) -> Long.toString(id));
                step("unknownJob", () -> {
                    try {
                        client.getJobDetails(JobID.fromHexString("0123456789abcdef0123456789abcdef")).get(t, TimeUnit.SECONDS);
                        throw new IllegalStateException("an unknown job id was answered");
                    } catch (ExecutionException e) {
                        for (Throwable c = e; c != null; c = c.getCause()) {
                            if (c instanceof RestClientException) {
                                RestClientException r = (RestClientException) c;
                                return r.getHttpResponseStatus().code() + " " + r.getMessage().replace('\n', ' ');
                            }
                        }
                        throw e;
                    }
                }, (String s) -> s);
                step("stopWithSavepoint", () -> client.stopWithSavepoint(job, false, path, SavepointFormatType.CANONICAL).get(t, TimeUnit.SECONDS), (String p) -> p);
            } else {
                step("getJobStatus", () -> client.getJobStatus(job).get(t, TimeUnit.SECONDS), (JobStatus s) -> s.name());
                step("disposeSavepoint", () -> client.disposeSavepoint(path).get(t, TimeUnit.SECONDS), a -> "acknowledged");
                step("cancel", () -> client.cancel(job).get(t, TimeUnit.SECONDS), a -> "acknowledged");
                step("requestJobResult", () -> client.requestJobResult(job).get(t, TimeUnit.SECONDS), (JobResult r) ->
                        r.getJobStatus().map(Enum::name).orElse("?") + " " + r.getJobId());
            }
        }
        System.out.flush();
        System.exit(failed ? 1 : 0);
    }
}
