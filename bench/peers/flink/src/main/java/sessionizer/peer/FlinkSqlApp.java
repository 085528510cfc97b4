package sessionizer.peer;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.table.api.EnvironmentSettings;
import org.apache.flink.table.api.StatementSet;
import org.apache.flink.table.api.TableEnvironment;

/**
 * Run a SQL script in a local Flink, as {@code sql-client.sh -f} would: its SET statements configure
 * the environment (before it is made, so checkpointing and state settings apply), the CREATE
 * statements define tables, views and functions, and its INSERTs run together as one job.
 */
public final class FlinkSqlApp {
    static final Pattern SET = Pattern.compile("SET\\s+'([^']+)'\\s*=\\s*'([^']*)'", Pattern.CASE_INSENSITIVE);

    public static void main(String[] args) throws Exception {
        List<String> statements = new ArrayList<>();
        for (String statement : Files.readString(Path.of(args[0])).split(";\\s*\\n")) {
            String sql = statement.lines().filter(line -> !line.strip().startsWith("--"))
                    .reduce("", (a, b) -> a + b + "\n").strip();
            if (!sql.isEmpty()) statements.add(sql);
        }
        Configuration config = new Configuration();
        for (String sql : statements) {
            Matcher set = SET.matcher(sql);
            if (set.matches()) config.setString(set.group(1), set.group(2));
        }
        TableEnvironment env = TableEnvironment.create(
                EnvironmentSettings.newInstance().inStreamingMode().withConfiguration(config).build());
        StatementSet inserts = env.createStatementSet();
        for (String sql : statements) {
            if (SET.matcher(sql).matches()) continue;
            if (sql.toUpperCase().startsWith("INSERT")) inserts.addInsertSql(sql);
            else env.executeSql(sql);
        }
        inserts.execute().await();
    }
}
