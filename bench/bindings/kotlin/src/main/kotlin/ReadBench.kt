// The per-call cost of one document read, `get("/title")`, through the Kotlin binding, against
// the same read in Rust, printed in the same run by `syncline-bench read`. Nanoseconds per
// call, the best of five rounds after a warm-up round for the JIT.

import dev.syncline.Store
import dev.syncline.Value
import java.nio.file.Files

fun perCall(reads: Int, read: () -> Any?): Double {
    var best = Double.MAX_VALUE
    var sink = 0
    repeat(6) { round ->
        val start = System.nanoTime()
        repeat(reads) { if (read() != null) sink++ }
        val ns = (System.nanoTime() - start).toDouble() / reads
        if (round > 0) best = minOf(best, ns) // round 0 warms the JIT up
    }
    check(sink > 0)
    return best
}

/** One field of `syncline-bench read --json`'s one-line object. */
fun field(json: String, name: String): Double =
    Regex("\"$name\":([0-9.]+)").find(json)?.groupValues?.get(1)?.toDouble()
        ?: error("no $name in $json")

fun main(args: Array<String>) {
    val bench = args[0]
    val reads = args.getOrElse(1) { "200000" }.toInt()
    val dir = Files.createTempDirectory("read-bench").toFile()
    val native: Double
    val count: Double
    val id: Double
    try {
        Store.open(dir.resolve("bench.db").path).use { store ->
            val doc = store.create(
                "todos",
                Value.Object(mapOf("title" to Value.Str("Buy milk"), "done" to Value.Bool(false))),
            )
            native = perCall(reads) { doc.get("/title") }
            // The same crossing with less to carry: a number back, then a string back.
            count = perCall(reads) { store.subscriptionCount }
            id = perCall(reads) { doc.id }
        }
    } finally {
        dir.deleteRecursively()
    }
    val process = ProcessBuilder(bench, "read", "--json", "--reads", reads.toString()).start()
    val json = process.inputStream.bufferedReader().readText()
    check(process.waitFor() == 0) { "syncline-bench read failed" }
    val rows = listOf(
        "kotlin: doc.get (native API, a Value)" to native,
        "kotlin: store.subscriptionCount (a number back)" to count,
        "kotlin: doc.id (a string back)" to id,
        "rust: FfiDocument::get (the facade, no crossing)" to field(json, "facade_ns"),
        "rust: Document::get (the SDK)" to field(json, "sdk_ns"),
        "floor: automerge get (no Syncline)" to field(json, "floor_automerge_ns"),
    )
    for ((name, ns) in rows) println("%-52s %10.0f ns".format(name, ns))
    println("%-52s %10.1f x".format("kotlin native / rust SDK", native / field(json, "sdk_ns")))
}
