#!/usr/bin/env bash
# Builds the grpc-java example (clients/java: grpc-netty over the epoll Unix
# domain-socket transport) with Maven, its pinned dependencies in the repo's
# ignored .tools/m2, and writes its runtime classpath to
# .tools/java-example.classpath for the interop tests.
# Idempotent: skipped when the sources and pom are unchanged since the last build.
# Needs a JDK >= 17 and Maven on PATH; fails loudly without them.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="$repo/clients/java"
m2="$repo/.tools/m2"
classpath="$repo/.tools/java-example.classpath"
stamp="$repo/.tools/.java-example.stamp"

for tool in java javac mvn; do
  if ! command -v "$tool" >/dev/null; then
    echo "java.sh: '$tool' is needed for the grpc-java example (Debian: apt-get install -y openjdk-17-jdk-headless maven)" >&2
    exit 1
  fi
done
hash="$(find "$dir/pom.xml" "$dir/src" -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
if [[ -f "$classpath" && -d "$dir/target/classes" && "$(cat "$stamp" 2>/dev/null)" == "$hash" ]]; then
  exit 0
fi
echo "java.sh: building clients/java (Maven, local repository $m2)" >&2
mkdir -p "$m2"
# `exec:java --help` also fetches the exec plugin, so the README's
# `mvn ... exec:java` runs offline afterwards.
mvn -B -q -Dmaven.repo.local="$m2" -f "$dir/pom.xml" \
  compile dependency:build-classpath -Dmdep.outputFile="$classpath" \
  exec:java -Dexec.args=--help
echo "$hash" >"$stamp"
