// spring-failover: Spring Data Redis in sentinel mode, configured only through Spring Boot's
// properties (spring.data.redis.sentinel.*), as an application would be; driven by the e2e
// client matrix. One line per write, as the other clients: "ok <i> <server addr>" once the
// master took it (and, with --wait N, N replicas acknowledged it; else "unacked <i> <addr>"),
// or "err <i> <error>". Errors are retried after a short pause.
package dev.vigil.failover;

import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import io.lettuce.core.cluster.api.async.RedisClusterAsyncCommands;
import org.springframework.boot.CommandLineRunner;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.data.redis.connection.RedisConnection;
import org.springframework.data.redis.core.RedisCallback;
import org.springframework.data.redis.core.StringRedisTemplate;

@SpringBootApplication
public class SpringFailover implements CommandLineRunner {
    /** One write: the server that took it and how many replicas acknowledged it. */
    record Written(String server, long acked) {}

    private static Map<String, String> options = Map.of();

    private final StringRedisTemplate redis;

    public SpringFailover(StringRedisTemplate redis) {
        this.redis = redis;
    }

    public static void main(String[] argv) {
        options = parse(argv);
        Map<String, Object> properties = new HashMap<>();
        properties.put("spring.data.redis.sentinel.master", require("master"));
        properties.put("spring.data.redis.sentinel.nodes",
                options.getOrDefault("sentinel", "127.0.0.1:26379"));
        if (options.containsKey("password")) {
            properties.put("spring.data.redis.password", options.get("password"));
        }
        properties.put("spring.data.redis.timeout", "1s");
        properties.put("spring.main.banner-mode", "off");
        // Its log on stdout would mix with the write lines; warnings still show.
        properties.put("spring.main.log-startup-info", "false");
        properties.put("logging.level.root", "warn");
        SpringApplication app = new SpringApplication(SpringFailover.class);
        app.setWebApplicationType(WebApplicationType.NONE);
        app.setDefaultProperties(properties);
        System.exit(SpringApplication.exit(app.run()));
    }

    @Override
    public void run(String... ignored) throws InterruptedException {
        int replicas = Integer.parseInt(options.getOrDefault("wait", "0"));
        long durationMs = (long) (Double.parseDouble(options.getOrDefault("duration", "120")) * 1000);
        long intervalMs = Long.parseLong(options.getOrDefault("interval-ms", "50"));
        String prefix = options.getOrDefault("key-prefix", "vigil:spring");
        long deadline = System.currentTimeMillis() + durationMs;
        for (long i = 0; System.currentTimeMillis() < deadline; i++) {
            String key = prefix + ":" + i;
            String value = Long.toString(i);
            try {
                Written w = redis.execute((RedisCallback<Written>) c -> write(c, key, value, replicas));
                String verdict = replicas == 0 || w.acked() >= replicas ? "ok" : "unacked";
                System.out.println(verdict + " " + i + " " + w.server());
                Thread.sleep(intervalMs);
            } catch (RuntimeException e) {
                String message = (e.getClass().getSimpleName() + ": " + e.getMessage()).replace('\n', ' ');
                System.out.println("err " + i + " " + message);
                Thread.sleep(100);
            }
        }
    }

    /**
     * SET through Spring's API, then CLIENT INFO (which server took it) and WAIT on the same
     * connection through its native Lettuce one: Spring's generic `execute` decodes replies as
     * bulk strings only, and WAIT's is an integer.
     */
    @SuppressWarnings("unchecked")
    private static Written write(RedisConnection c, String key, String value, int replicas) {
        c.stringCommands().set(bytes(key), bytes(value));
        RedisClusterAsyncCommands<byte[], byte[]> lettuce =
                (RedisClusterAsyncCommands<byte[], byte[]>) c.getNativeConnection();
        try {
            String server = "?";
            for (String field : lettuce.clientInfo().get().trim().split(" ")) {
                if (field.startsWith("laddr=")) {
                    server = field.substring("laddr=".length());
                }
            }
            long acked = replicas > 0 ? lettuce.waitForReplication(replicas, 1000).get() : 0;
            return new Written(server, acked);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        } catch (ExecutionException e) {
            throw new IllegalStateException(e.getCause());
        }
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static String require(String name) {
        String value = options.get(name);
        if (value == null) {
            throw new IllegalArgumentException("--" + name + " is required");
        }
        return value;
    }

    private static Map<String, String> parse(String[] argv) {
        Map<String, String> args = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) {
            if (!argv[i].startsWith("--")) {
                throw new IllegalArgumentException("expected --name value, got " + argv[i]);
            }
            args.put(argv[i].substring(2), argv[i + 1]);
        }
        return args;
    }
}
