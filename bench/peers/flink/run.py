"""Start the Flink SQL peer (job.sql in a local Flink MiniCluster) for `make bench-compare`.

Built with Maven on first use (bench/peers/flink/pom.xml: Flink 2.2.1, flink-connector-kafka
5.0.0-2.2 from Maven Central); the JVM gets the module openings Flink's own launch scripts give it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLASSES = HERE / "target" / "classes"
LIB = HERE / "target" / "lib"
# From Flink's conf/config.yaml (env.java.opts.all): what Flink needs opened on Java 17.
JAVA_OPENS = [
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED", "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    *(f"--add-opens=java.base/{package}=ALL-UNNAMED" for package in (
        "java.lang", "java.net", "java.io", "java.nio", "sun.nio.ch", "java.lang.reflect", "java.text", "java.time",
        "java.util", "java.util.concurrent", "java.util.concurrent.atomic", "java.util.concurrent.locks")),
]


def build() -> None:
    sources = [*HERE.joinpath("src").rglob("*.java"), HERE / "pom.xml"]
    built = CLASSES / "sessionizer" / "peer" / "FlinkSqlApp.class"
    if not built.exists() or not LIB.exists() or built.stat().st_mtime < max(f.stat().st_mtime for f in sources):
        subprocess.run(["mvn", "-q", "-B", "-f", str(HERE / "pom.xml"), "package", "-DskipTests"], check=True)


def start(bootstrap: str, work: Path, topic: str, group: str, sessions: str, rolling: str) -> subprocess.Popen:
    build()
    checkpoints = work / f"{group}-checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    job = work / f"{group}.sql"
    text = (HERE / "job.sql").read_text()
    for name, value in (("BOOTSTRAP", bootstrap), ("INPUT", topic), ("GROUP", group), ("SESSIONS", sessions),
                        ("ROLLING", rolling), ("CHECKPOINTS", str(checkpoints))):
        text = text.replace(f"@{name}@", value)
    job.write_text(text)
    return subprocess.Popen(["java", "-Xms1g", "-Xmx1g", *JAVA_OPENS, "-cp", f"{CLASSES}:{LIB}/*",
                             "sessionizer.peer.FlinkSqlApp", str(job)],
                            stdout=open(work / f"{group}.log", "wb"), stderr=subprocess.STDOUT)
