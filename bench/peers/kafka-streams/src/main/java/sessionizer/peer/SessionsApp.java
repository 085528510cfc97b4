package sessionizer.peer;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.EmitStrategy;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.SessionWindows;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.state.BuiltInDslStoreSuppliers;

/**
 * The job sessionizer does, written the way a Kafka Streams user would: per-player session windows
 * (inactivity gap + grace) and a 2-minute tumbling window, each summed with exact BigDecimal amounts,
 * suppressed until the window closes, exactly-once v2, written as the Xtremepush envelope JSON.
 *
 * <p>args: bootstrap input-topic application-id sessions-topic rolling-topic state-dir [tuned THREADS]
 *
 * <p>Without "tuned": Kafka Streams' defaults, as a user following the guide runs it (one stream
 * thread, exactly-once's 100 ms commit interval, RocksDB stores, {@code suppress}). With "tuned
 * THREADS", what an expert would set for this job: THREADS stream threads, sessionizer's 250 ms
 * commit interval, RocksDB stores (in-memory DSL stores can be asked for, "tuned THREADS memory":
 * measured slower on this job, the README says by how much), a 128 MiB record cache, and
 * sessionizer's producer batching (linger 20 ms, batch up to 1 MB, no compression).
 * {@code emitStrategy(onWindowClose())} (KIP-825)
 * in place of {@code suppress} can be asked for ("tuned THREADS STORES close"), but it loses
 * windows on this job (the README says how many), so the tuned runs keep {@code suppress}.
 */
public final class SessionsApp {
    static final ObjectMapper JSON = new ObjectMapper().enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS);
    static final Duration GAP = Duration.ofMinutes(10);
    static final Duration GRACE = Duration.ofSeconds(30);
    static final Duration SIZE = Duration.ofMinutes(2);
    static final DateTimeFormatter TEXT_TIME = DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss[.SSSSSS][.SSS][.SS][.S]");
    static final DateTimeFormatter OUT_TIME = DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss");

    /** One spin; null for a record that is not a valid spin (filtered out). */
    public static final class Spin {
        public String user;
        public long time;
        public BigDecimal stake = BigDecimal.ZERO;
        public BigDecimal win = BigDecimal.ZERO;
        public String game;
        public String channel;
    }

    /** The running totals of one window (or session). */
    public static final class Totals {
        public long count;
        public BigDecimal stake = BigDecimal.ZERO;
        public BigDecimal win = BigDecimal.ZERO;
        public String game;
        public String channel;
        public long labelTime = Long.MIN_VALUE;

        Totals add(Spin s) {
            count++;
            stake = stake.add(s.stake);
            win = win.add(s.win);
            if (s.time >= labelTime) {
                if (s.game != null) game = s.game;
                if (s.channel != null) channel = s.channel;
                labelTime = s.time;
            }
            return this;
        }

        Totals merge(Totals other) {
            Totals t = new Totals();
            t.count = count + other.count;
            t.stake = stake.add(other.stake);
            t.win = win.add(other.win);
            Totals later = other.labelTime >= labelTime ? other : this;
            Totals earlier = later == other ? this : other;
            t.game = later.game != null ? later.game : earlier.game;
            t.channel = later.channel != null ? later.channel : earlier.channel;
            t.labelTime = Math.max(labelTime, other.labelTime);
            return t;
        }
    }

    static long parseTime(JsonNode node) {
        if (node == null || node.isNull()) return -1;
        if (node.isIntegralNumber()) return node.asLong();
        String text = node.asText();
        if (text.indexOf('T') > 0) return OffsetDateTime.parse(text).toInstant().toEpochMilli();
        return LocalDateTime.parse(text, TEXT_TIME).toInstant(ZoneOffset.UTC).toEpochMilli();
    }

    static Spin parse(byte[] bytes) {
        try {
            JsonNode root = JSON.readTree(bytes);
            if (!root.isObject() || !"spin".equals(root.path("event").asText())) return null;
            Spin s = new Spin();
            s.user = root.path("user_id").asText(null);
            s.time = parseTime(root.get("timestamp"));
            JsonNode value = root.path("value");
            if (value.hasNonNull("stake")) s.stake = value.get("stake").decimalValue();
            if (value.hasNonNull("win")) s.win = value.get("win").decimalValue();
            s.game = value.hasNonNull("game_code") ? value.get("game_code").asText() : null;
            s.channel = value.hasNonNull("channel") ? value.get("channel").asText() : null;
            return s.user == null || s.time < 0 ? null : s;
        } catch (Exception e) {
            return null;  // not aggregated (sessionizer would dead-letter it)
        }
    }

    static <T> Serde<T> jsonSerde(Class<T> type) {
        Serializer<T> ser = (topic, value) -> {
            try { return value == null ? null : JSON.writeValueAsBytes(value); }
            catch (Exception e) { throw new RuntimeException(e); }
        };
        Deserializer<T> de = (topic, bytes) -> {
            try { return bytes == null ? null : JSON.readValue(bytes, type); }
            catch (Exception e) { throw new RuntimeException(e); }
        };
        return Serdes.serdeFrom(ser, de);
    }

    static String amount(BigDecimal value) {
        BigDecimal stripped = value.stripTrailingZeros();
        return (stripped.scale() < 0 ? stripped.setScale(0) : stripped).toPlainString();
    }

    static String envelope(String event, String user, long stampMs, ObjectNode value) {
        ObjectNode out = JSON.createObjectNode();
        out.put("event", event);
        out.put("user_id", user);
        out.put("timestamp", OUT_TIME.format(Instant.ofEpochMilli(stampMs).atOffset(ZoneOffset.UTC)));
        out.set("value", value);
        out.set("user_attributes", JSON.createObjectNode());
        return out.toString();
    }

    static String session(Windowed<String> window, Totals t) {
        ObjectNode v = JSON.createObjectNode();
        long start = window.window().start(), end = window.window().end();
        v.put("session_start_ms", start);
        v.put("session_end_ms", end);
        v.put("duration_ms", end - start);
        v.put("event_count", t.count);
        v.put("stake_total", new BigDecimal(amount(t.stake)));
        v.put("win_total", new BigDecimal(amount(t.win)));
        v.put("net_total", new BigDecimal(amount(t.win.subtract(t.stake))));
        v.put("game_code", t.game);
        v.put("channel", t.channel);
        v.put("close_reason", "inactivity");
        return envelope("session", window.key(), start, v);
    }

    static String rolling(Windowed<String> window, Totals t) {
        ObjectNode v = JSON.createObjectNode();
        v.put("window_start_ms", window.window().start());
        v.put("window_end_ms", window.window().end());
        v.put("event_count", t.count);
        v.put("stake_total", new BigDecimal(amount(t.stake)));
        v.put("win_total", new BigDecimal(amount(t.win)));
        v.put("net_total", new BigDecimal(amount(t.win.subtract(t.stake))));
        return envelope("session_summary", window.key(), window.window().start(), v);
    }

    public static void main(String[] args) throws InterruptedException {
        String bootstrap = args[0], inputTopic = args[1], appId = args[2], sessionsTopic = args[3], rollingTopic = args[4];
        boolean tuned = args.length > 6 && args[6].equals("tuned");
        // tuned THREADS [STORES EMIT]: STORES "rocksdb" (default) or "memory"; EMIT "suppress" (default) or
        // "close" (emitStrategy(onWindowClose()), KIP-825: it loses windows here, see the README)
        boolean inMemory = tuned && args.length > 8 && args[8].equals("memory");
        boolean emitOnClose = tuned && args.length > 9 && args[9].equals("close");
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.STATE_DIR_CONFIG, args[5]);
        props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        props.put("consumer.auto.offset.reset", "earliest");
        if (tuned) {
            props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(args[7]));
            props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 250);
            if (inMemory) {
                props.put(StreamsConfig.DSL_STORE_SUPPLIERS_CLASS_CONFIG, BuiltInDslStoreSuppliers.InMemoryDslStoreSuppliers.class);
            }
            props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 128L * 1024 * 1024);
            props.put(StreamsConfig.producerPrefix("linger.ms"), 20);
            props.put(StreamsConfig.producerPrefix("batch.size"), 1_000_000);
            props.put(StreamsConfig.producerPrefix("compression.type"), "none");
        }

        Serde<Spin> spinSerde = jsonSerde(Spin.class);
        Serde<Totals> totalsSerde = jsonSerde(Totals.class);
        // Input records are parsed once, by the value deserializer; the event time comes from the result.
        Serde<Spin> input = Serdes.serdeFrom(spinSerde.serializer(), (topic, bytes) -> bytes == null ? null : parse(bytes));
        StreamsBuilder builder = new StreamsBuilder();
        KStream<String, Spin> spins = builder.stream(inputTopic, Consumed.with(Serdes.String(), input)
                        .withTimestampExtractor((record, previous) ->
                                record.value() instanceof Spin spin ? spin.time : previous))
                .filter((key, spin) -> spin != null);
        var sessionWindows = spins.groupByKey(Grouped.with(Serdes.String(), spinSerde))
                .windowedBy(SessionWindows.ofInactivityGapAndGrace(GAP, GRACE));
        if (emitOnClose) sessionWindows = sessionWindows.emitStrategy(EmitStrategy.onWindowClose());
        var sessionTotals = sessionWindows.aggregate(Totals::new, (key, spin, totals) -> totals.add(spin),
                (key, a, b) -> a.merge(b), Materialized.with(Serdes.String(), totalsSerde));
        if (!emitOnClose) sessionTotals = sessionTotals.suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()));
        sessionTotals.toStream()
                .map((window, totals) -> KeyValue.pair(window.key(), session(window, totals)))
                .to(sessionsTopic, Produced.with(Serdes.String(), Serdes.String()));
        var timeWindows = spins.groupByKey(Grouped.with(Serdes.String(), spinSerde))
                .windowedBy(TimeWindows.ofSizeAndGrace(SIZE, GRACE));
        if (emitOnClose) timeWindows = timeWindows.emitStrategy(EmitStrategy.onWindowClose());
        var windowTotals = timeWindows.aggregate(Totals::new, (key, spin, totals) -> totals.add(spin),
                Materialized.with(Serdes.String(), totalsSerde));
        if (!emitOnClose) windowTotals = windowTotals.suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()));
        windowTotals.toStream()
                .map((window, totals) -> KeyValue.pair(window.key(), rolling(window, totals)))
                .to(rollingTopic, Produced.with(Serdes.String(), Serdes.String()));

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        CountDownLatch done = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> { streams.close(Duration.ofSeconds(30)); done.countDown(); }));
        streams.start();
        done.await();
    }

    static byte[] utf8(String s) { return s.getBytes(StandardCharsets.UTF_8); }
}
