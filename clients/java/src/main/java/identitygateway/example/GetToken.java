package identitygateway.example;

import static java.util.concurrent.TimeUnit.SECONDS;

import com.google.protobuf.ByteString;
import com.google.protobuf.DescriptorProtos.FileDescriptorProto;
import com.google.protobuf.Descriptors;
import com.google.protobuf.Descriptors.FileDescriptor;
import com.google.protobuf.DynamicMessage;
import com.google.protobuf.Message;
import com.google.protobuf.AnyProto;
import com.google.protobuf.DurationProto;
import com.google.protobuf.EmptyProto;
import com.google.protobuf.StructProto;
import com.google.protobuf.TimestampProto;
import com.google.protobuf.WrappersProto;
import io.grpc.CallOptions;
import io.grpc.ManagedChannel;
import io.grpc.MethodDescriptor;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthGrpc;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.protobuf.ProtoUtils;
import io.grpc.reflection.v1.ServerReflectionGrpc;
import io.grpc.reflection.v1.ServerReflectionRequest;
import io.grpc.reflection.v1.ServerReflectionResponse;
import io.grpc.reflection.v1.ServiceResponse;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.StreamObserver;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.Epoll;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.unix.DomainSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Instant;
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;

/**
 * Calls identity-gateway from grpc-java over its Unix socket, with default channel
 * options: health check, server reflection, then GetToken.
 *
 * <p>usage: GetToken [RESOURCE] — the socket is $IDENTITY_GATEWAY_SOCKET, else
 * /run/identity-gateway/gateway.sock. Prints no token, only what it is for.
 */
public final class GetToken {
  private static final String SERVICE = "identity_gateway.v1.IdentityGateway";

  public static void main(String[] args) throws Exception {
    if (args.length > 0 && args[0].equals("--help")) {
      System.out.println("usage: GetToken [RESOURCE]  (socket: $IDENTITY_GATEWAY_SOCKET)");
      return;
    }
    String resource = args.length > 0 ? args[0] : "https://vault.azure.net";
    String socket =
        Path.of(System.getenv().getOrDefault("IDENTITY_GATEWAY_SOCKET", "/run/identity-gateway/gateway.sock"))
            .toAbsolutePath()
            .toString();
    if (!Epoll.isAvailable()) {
      throw new IllegalStateException("Netty epoll is unavailable", Epoll.unavailabilityCause());
    }
    EventLoopGroup group = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
    ManagedChannel channel =
        NettyChannelBuilder.forAddress(new DomainSocketAddress(socket))
            .eventLoopGroup(group)
            .channelType(EpollDomainSocketChannel.class)
            .usePlaintext()
            .build();
    try {
      var health =
          HealthGrpc.newBlockingStub(channel)
              .withDeadlineAfter(10, SECONDS)
              .check(HealthCheckRequest.getDefaultInstance());
      System.out.println("health: " + health.getStatus());

      var services =
          reflect(channel, ServerReflectionRequest.newBuilder().setListServices("").build())
              .getListServicesResponse()
              .getServiceList()
              .stream()
              .map(ServiceResponse::getName)
              .sorted()
              .collect(Collectors.joining(" "));
      System.out.println("services: " + services);

      var files =
          reflect(channel, ServerReflectionRequest.newBuilder().setFileContainingSymbol(SERVICE).build())
              .getFileDescriptorResponse()
              .getFileDescriptorProtoList();
      var method = methodOf(files, "GetToken");
      var request =
          DynamicMessage.newBuilder(method.getInputType())
              .setField(method.getInputType().findFieldByName("resource"), resource)
              .build();
      DynamicMessage reply =
          ClientCalls.blockingUnaryCall(
              channel, grpcMethod(method), CallOptions.DEFAULT.withDeadlineAfter(30, SECONDS), request);
      var out = method.getOutputType();
      String token = (String) reply.getField(out.findFieldByName("access_token"));
      String type = (String) reply.getField(out.findFieldByName("token_type"));
      String forResource = (String) reply.getField(out.findFieldByName("resource"));
      Message expires = (Message) reply.getField(out.findFieldByName("expires_on"));
      long seconds = (Long) expires.getField(expires.getDescriptorForType().findFieldByName("seconds"));
      System.out.printf(
          "token for %s (%s, aud %s), expires %s%n",
          forResource, type, audience(token), Instant.ofEpochSecond(seconds));
    } finally {
      channel.shutdownNow().awaitTermination(5, SECONDS);
      group.shutdownGracefully(0, 5, SECONDS).await(10, SECONDS);
    }
  }

  /** One request on the bidirectional reflection stream, and its answer. */
  private static ServerReflectionResponse reflect(ManagedChannel channel, ServerReflectionRequest request)
      throws Exception {
    var answer = new CompletableFuture<ServerReflectionResponse>();
    var requests =
        ServerReflectionGrpc.newStub(channel)
            .withDeadlineAfter(10, SECONDS)
            .serverReflectionInfo(
                new StreamObserver<>() {
                  @Override
                  public void onNext(ServerReflectionResponse response) {
                    answer.complete(response);
                  }

                  @Override
                  public void onError(Throwable t) {
                    answer.completeExceptionally(t);
                  }

                  @Override
                  public void onCompleted() {
                    answer.completeExceptionally(new IllegalStateException("reflection stream ended early"));
                  }
                });
    requests.onNext(request);
    try {
      var response = answer.get(10, SECONDS);
      if (response.hasErrorResponse()) {
        throw new IllegalStateException("reflection: " + response.getErrorResponse().getErrorMessage());
      }
      return response;
    } finally {
      requests.onCompleted();
    }
  }

  /** The method, from the file descriptors reflection returned (dependencies included). */
  private static Descriptors.MethodDescriptor methodOf(java.util.List<ByteString> files, String name)
      throws Exception {
    Map<String, FileDescriptorProto> protos = new HashMap<>();
    for (ByteString file : files) {
      var proto = FileDescriptorProto.parseFrom(file);
      protos.put(proto.getName(), proto);
    }
    Map<String, FileDescriptor> built = new HashMap<>();
    // Well-known types: reflection sends the gateway's own files, not these.
    for (FileDescriptor known :
        new FileDescriptor[] {
          AnyProto.getDescriptor(), DurationProto.getDescriptor(), EmptyProto.getDescriptor(),
          StructProto.getDescriptor(), TimestampProto.getDescriptor(), WrappersProto.getDescriptor()
        }) {
      built.put(known.getName(), known);
    }
    for (String file : protos.keySet()) {
      var service = build(file, protos, built).findServiceByName(SERVICE.substring(SERVICE.lastIndexOf('.') + 1));
      if (service != null && file.equals(service.getFile().getName())) {
        return service.findMethodByName(name);
      }
    }
    throw new IllegalStateException(SERVICE + " is not in the reflection answer");
  }

  private static FileDescriptor build(
      String name, Map<String, FileDescriptorProto> protos, Map<String, FileDescriptor> built) throws Exception {
    if (built.containsKey(name)) {
      return built.get(name);
    }
    var proto = protos.get(name);
    if (proto == null) {
      throw new IllegalStateException("reflection did not send " + name);
    }
    var deps = new FileDescriptor[proto.getDependencyCount()];
    for (int i = 0; i < deps.length; i++) {
      deps[i] = build(proto.getDependency(i), protos, built);
    }
    var file = FileDescriptor.buildFrom(proto, deps);
    built.put(name, file);
    return file;
  }

  private static MethodDescriptor<DynamicMessage, DynamicMessage> grpcMethod(Descriptors.MethodDescriptor method) {
    return MethodDescriptor.<DynamicMessage, DynamicMessage>newBuilder()
        .setType(MethodDescriptor.MethodType.UNARY)
        .setFullMethodName(MethodDescriptor.generateFullMethodName(SERVICE, method.getName()))
        .setRequestMarshaller(ProtoUtils.marshaller(DynamicMessage.getDefaultInstance(method.getInputType())))
        .setResponseMarshaller(ProtoUtils.marshaller(DynamicMessage.getDefaultInstance(method.getOutputType())))
        .build();
  }

  /** The JWT's `aud` claim (unverified: only to show which audience the token is for). */
  private static String audience(String jwt) {
    String[] parts = jwt.split("\\.");
    if (parts.length < 2) {
      return "?";
    }
    String payload = new String(Base64.getUrlDecoder().decode(parts[1]), StandardCharsets.UTF_8);
    Matcher m = Pattern.compile("\"aud\"\\s*:\\s*\"([^\"]*)\"").matcher(payload);
    return m.find() ? m.group(1).replace("\\/", "/") : "?";
  }
}
