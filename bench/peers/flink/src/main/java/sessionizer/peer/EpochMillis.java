package sessionizer.peer;

import java.time.LocalDateTime;
import java.time.ZoneOffset;
import org.apache.flink.table.functions.ScalarFunction;

/** epoch_ms(ts): a TIMESTAMP(3) read as UTC, in milliseconds since the epoch (Flink SQL has no built-in for it). */
public final class EpochMillis extends ScalarFunction {
    public Long eval(LocalDateTime time) {
        return time == null ? null : time.toInstant(ZoneOffset.UTC).toEpochMilli();
    }
}
