package dev.moorage.client;

import dev.moorage.v1.AgentServiceGrpc;
import dev.moorage.v1.GetEntityRequest;
import dev.moorage.v1.GetOrchestrationRequest;
import dev.moorage.v1.ListAgentsRequest;
import dev.moorage.v1.RaiseEventRequest;
import dev.moorage.v1.ResumeRequest;
import dev.moorage.v1.SignalEntityRequest;
import dev.moorage.v1.StartOrchestrationRequest;
import dev.moorage.v1.SuspendRequest;
import dev.moorage.v1.TerminateRequest;
import dev.moorage.v1.WaitForOrchestrationRequest;
import io.grpc.ChannelCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import io.grpc.stub.MetadataUtils;
import java.io.File;
import java.io.IOException;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import java.util.stream.Stream;

/**
 * Talks to Moorage's gateway over gRPC ({@code moorage.v1.AgentService}).
 *
 * <pre>{@code
 * try (MoorageClient client = MoorageClient.connect("localhost:8080")) {
 *   AgentSession session = client.agent("Joker").newSession();
 *   System.out.println(session.run("Tell me a joke about pirates").text());
 * }
 * }</pre>
 */
public final class MoorageClient implements AutoCloseable {
  private static final int MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

  private final ManagedChannel channel;
  final AgentServiceGrpc.AgentServiceBlockingStub stub;

  private MoorageClient(ManagedChannel channel) {
    this(channel, null);
  }

  private MoorageClient(ManagedChannel channel, String token) {
    this.channel = channel;
    AgentServiceGrpc.AgentServiceBlockingStub s =
        AgentServiceGrpc.newBlockingStub(channel).withInterceptors(new ReconnectOnUnavailable(channel));
    if (token != null && !token.isEmpty()) {
      Metadata headers = new Metadata();
      headers.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + token);
      s = s.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));
    }
    this.stub = s;
  }

  /**
   * Connects with a bearer token (a token of a sidecar started with --auth-token-file, or a JWT for one with
   * --auth-jwks; null: none) and, with {@code caPem} and/or {@code certChainPem}+{@code keyPem}, TLS trusting that CA
   * (null: the system roots) and presenting that client certificate (mutual TLS). Without any PEM file the address
   * decides: "https://" is TLS with the system roots.
   */
  public static MoorageClient connect(String address, String token, File caPem, File certChainPem, File keyPem)
      throws IOException {
    String[] parsed = parseAddress(address);
    boolean tls = caPem != null || certChainPem != null || !parsed[1].isEmpty();
    ChannelCredentials creds = InsecureChannelCredentials.create();
    if (tls) {
      TlsChannelCredentials.Builder b = TlsChannelCredentials.newBuilder();
      if (caPem != null) b.trustManager(caPem);
      if (certChainPem != null) b.keyManager(certChainPem, keyPem);
      creds = b.build();
    }
    ManagedChannel channel = keepAlive(Grpc.newChannelBuilder(parsed[0], creds).maxInboundMessageSize(MAX_MESSAGE_BYTES))
        .build();
    return new MoorageClient(channel, token);
  }

  /** Connects with a bearer token (see {@link #connect(String, String, File, File, File)}). */
  public static MoorageClient connect(String address, String token) {
    try {
      return connect(address, token, null, null, null);
    } catch (IOException e) {
      throw new IllegalStateException(e);  // no file to read
    }
  }

  /**
   * Connects to the gateway's gRPC address: "host:port" (the sidecar's port when the gateway runs inside it), or
   * "https://host[:port]" for TLS.
   */
  public static MoorageClient connect(String address) {
    String[] parsed = parseAddress(address);
    ManagedChannelBuilder<?> builder =
        keepAlive(ManagedChannelBuilder.forTarget(parsed[0]).maxInboundMessageSize(MAX_MESSAGE_BYTES));
    if (!parsed[1].isEmpty()) builder.useTransportSecurity();
    else builder.usePlaintext();
    return new MoorageClient(builder.build());
  }

  /**
   * A gateway cut off (node lost, path dropped) closes nothing: a ping every 20 s, answered within 20 s, finds it, and
   * a call waiting on it fails UNAVAILABLE instead of waiting for as long as TCP keeps the dead connection.
   */
  private static ManagedChannelBuilder<?> keepAlive(ManagedChannelBuilder<?> builder) {
    return builder
        .keepAliveTime(20, TimeUnit.SECONDS)
        .keepAliveTimeout(20, TimeUnit.SECONDS)
        .defaultServiceConfig(RETRY_SERVICE_CONFIG)
        .enableRetry();
  }

  /**
   * The calls that change nothing, sent again when they fail UNAVAILABLE (their gateway killed mid-call, a replica
   * behind a Service gone): up to 5 attempts over about 2 s, which reach another replica or the same one restarted.
   * Run, StartRun, RaiseEvent, SignalEntity and the rest act, so they are not. The same methods and policy as the
   * Python client's (moorage.connection.gateway_retry_args). Numbers are doubles, as grpc-java's JSON parser makes.
   */
  private static final Map<String, ?> RETRY_SERVICE_CONFIG =
      Map.of(
          "methodConfig",
          List.of(
              Map.of(
                  "name",
                  Stream.of(
                          "ListAgents",
                          "GetRunResult",
                          "GetSession",
                          "ListSessions",
                          "GetOrchestration",
                          "WaitForOrchestration",
                          "GetEntity")
                      .map(m -> Map.of("service", "moorage.v1.AgentService", "method", m))
                      .toList(),
                  "retryPolicy",
                  Map.of(
                      "maxAttempts", 5.0,
                      "initialBackoff", "0.25s",
                      "maxBackoff", "2s",
                      "backoffMultiplier", 2.0,
                      "retryableStatusCodes", List.of("UNAVAILABLE")))));

  /** {target "host:port", "1" for TLS or "" for plaintext}. */
  private static String[] parseAddress(String address) {
    boolean secure = false;
    String target = address;
    for (String[] p : new String[][] {{"https://", "1"}, {"grpcs://", "1"}, {"http://", ""}, {"grpc://", ""}}) {
      if (target.startsWith(p[0])) {
        target = target.substring(p[0].length());
        secure = !p[1].isEmpty();
        break;
      }
    }
    target = target.replaceAll("/+$", "");
    if (!target.substring(target.lastIndexOf(']') + 1).contains(":")) target += secure ? ":443" : ":80";
    return new String[] {target, secure ? "1" : ""};
  }

  /** Wraps an existing channel (custom credentials, interceptors, ...). */
  public static MoorageClient of(ManagedChannel channel) {
    return new MoorageClient(channel);
  }

  static <T> T call(Supplier<T> rpc) {
    try {
      return rpc.get();
    } catch (StatusRuntimeException e) {
      throw MoorageException.from(e);
    }
  }

  /** The agent named {@code name} (e.g. "Joker"). */
  public Agent agent(String name) {
    return new Agent(this, name);
  }

  /** Names of the agents the gateway knows. */
  public List<String> agents() {
    return call(() -> stub.listAgents(ListAgentsRequest.getDefaultInstance())).getAgentsList().stream()
        .map(a -> a.getName()).toList();
  }

  // -- orchestrations -------------------------------------------------------------------------------------------

  /** Starts an orchestration ({@code input} encoded as JSON with Gson); returns its instance id. */
  public String startOrchestration(String name, Object input) {
    return startOrchestration(name, input, "");
  }

  public String startOrchestration(String name, Object input, String instanceId) {
    StartOrchestrationRequest req = StartOrchestrationRequest.newBuilder().setName(name)
        .setInputJson(Json.dumps(input)).setInstanceId(instanceId == null ? "" : instanceId).build();
    return call(() -> stub.startOrchestration(req)).getInstanceId();
  }

  public Orchestration getOrchestration(String instanceId) {
    return Orchestration.from(call(() -> stub.getOrchestration(
        GetOrchestrationRequest.newBuilder().setInstanceId(instanceId).build())));
  }

  /** Waits until the instance finishes; DEADLINE_EXCEEDED after {@code timeout}. */
  public Orchestration waitForOrchestration(String instanceId, Duration timeout) {
    return Orchestration.from(call(() -> stub.waitForOrchestration(WaitForOrchestrationRequest.newBuilder()
        .setInstanceId(instanceId).setTimeoutSeconds(timeout.toMillis() / 1000.0).build())));
  }

  public void raiseEvent(String instanceId, String eventName, Object data) {
    call(() -> stub.raiseEvent(RaiseEventRequest.newBuilder().setInstanceId(instanceId).setEventName(eventName)
        .setDataJson(Json.dumps(data)).build()));
  }

  public void terminate(String instanceId, Object output) {
    call(() -> stub.terminate(TerminateRequest.newBuilder().setInstanceId(instanceId)
        .setOutputJson(Json.dumps(output)).setRecursive(true).build()));
  }

  public void suspend(String instanceId, String reason) {
    call(() -> stub.suspend(SuspendRequest.newBuilder().setInstanceId(instanceId)
        .setReason(reason == null ? "" : reason).build()));
  }

  public void resume(String instanceId, String reason) {
    call(() -> stub.resume(ResumeRequest.newBuilder().setInstanceId(instanceId)
        .setReason(reason == null ? "" : reason).build()));
  }

  // -- entities -------------------------------------------------------------------------------------------------

  /** Sends a one-way operation ({@code input} encoded as JSON) to the entity name/key. */
  public void signalEntity(String name, String key, String operation, Object input) {
    call(() -> stub.signalEntity(SignalEntityRequest.newBuilder().setName(name).setKey(key).setOperation(operation)
        .setInputJson(Json.dumps(input)).build()));
  }

  /** Reads an entity; NOT_FOUND when it has no state. */
  public Entity getEntity(String name, String key) {
    return Entity.from(call(() -> stub.getEntity(GetEntityRequest.newBuilder().setName(name).setKey(key).build())));
  }

  @Override
  public void close() {
    channel.shutdown();
    try {
      channel.awaitTermination(5, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }
}
