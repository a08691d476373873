// The README cannot drift from the tools (issue 22): every command it shows of affinity-lab,
// affinityctl and affinityd names a subcommand and options that the tool's --help lists, every
// script it names exists, and the concrete examples (no placeholders) run as written, in a
// scratch folder laid out like the repository, with the output the README shows.
import Foundation
import TestSupport
import Testing

/// A command shown in README.md.
struct ReadmeCommand: CustomStringConvertible, Sendable {
    /// The command as written (table escapes undone, comment dropped).
    var text: String
    /// Whether it is in a ```sh block (else inline, e.g. in the command table).
    var inBlock: Bool
    /// The README line it is on.
    var line: Int
    var description: String { "README.md:\(line): \(text)" }

    var tokens: [String] {
        text.split(separator: " ").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "[]")) }.filter { !$0.isEmpty }
    }

    /// `affinity-lab`, `affinityctl`, `affinityd`, or the path of a script.
    var program: String {
        let first = tokens.first ?? ""
        if first == "python3" { return tokens.count > 1 ? tokens[1] : first }
        return first.hasPrefix(".build/release/") ? String(first.dropFirst(".build/release/".count)) : first
    }

    /// A placeholder: an upper-case word (SLICE.png, DIR, W, RUN, X2.png …).
    var hasPlaceholder: Bool {
        tokens.contains { t in
            let stem = t.split(separator: ".").first.map(String.init) ?? t
            return stem.count >= 1 && stem.allSatisfy { $0.isUppercase || $0.isNumber || $0 == "_" } && stem.first!.isLetter
        } || text.contains("…")
    }

    /// Reads the commands of README.md.
    static func all(in readme: String) -> [ReadmeCommand] {
        var out: [ReadmeCommand] = []
        var inShell = false, inOther = false
        let starts = ["affinity-lab ", "affinityctl ", ".build/release/", "scripts/", "python3 bench/"]
        for (n, raw) in readme.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(raw)
            if line.hasPrefix("```") {
                if inShell || inOther { inShell = false; inOther = false } else if line == "```sh" { inShell = true } else { inOther = true }
                continue
            }
            if inOther { continue }
            if inShell {
                var text = line
                if let hash = text.range(of: " #") { text = String(text[..<hash.lowerBound]) }
                text = text.trimmingCharacters(in: .whitespaces)
                if starts.contains(where: text.hasPrefix) { out.append(ReadmeCommand(text: text, inBlock: true, line: n + 1)) }
                continue
            }
            // Inline code spans.
            let parts = line.replacingOccurrences(of: "\\|", with: "\u{1}").split(separator: "`", omittingEmptySubsequences: false)
            for (i, part) in parts.enumerated() where i % 2 == 1 {
                let text = part.replacingOccurrences(of: "\u{1}", with: "|").trimmingCharacters(in: .whitespaces)
                if starts.contains(where: text.hasPrefix) && text.contains(" ") {
                    out.append(ReadmeCommand(text: text, inBlock: false, line: n + 1))
                }
            }
        }
        return out
    }
}

@Suite("README examples", .serialized)
struct ReadmeExamplesTests {
    static let readme = (try? String(contentsOf: CtlPaths.repository.appendingPathComponent("README.md"), encoding: .utf8)) ?? ""
    static let commands = ReadmeCommand.all(in: readme)

    static func help(_ exe: String, _ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args + ["--help"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// The subcommands a --help lists (ArgumentParser's SUBCOMMANDS section).
    static func subcommands(_ helpText: String) -> Set<String> {
        guard let r = helpText.range(of: "SUBCOMMANDS:") else { return [] }
        var names = Set<String>()
        // "  name[, alias]   summary": the names before the run of spaces; the closing "See …" line is not one.
        for line in helpText[r.upperBound...].split(separator: "\n") where line.hasPrefix("  ") && !line.hasPrefix("   ") {
            let head = line.trimmingCharacters(in: .whitespaces).components(separatedBy: "  ").first ?? ""
            if head.hasPrefix("See ") { continue }
            for name in head.split(separator: ",") { names.insert(name.trimmingCharacters(in: .whitespaces)) }
        }
        return names
    }

    @Test func theReadmeShowsCommands() {
        #expect(Self.commands.count >= 12, "\(Self.commands)")
        #expect(Self.commands.contains { $0.inBlock && $0.program == "affinityctl" && !$0.hasPlaceholder })
    }

    @Test func everyCommandsOptionsAreTheToolsOptions() throws {
        for command in Self.commands {
            switch command.program {
            case "affinity-lab", "affinityctl", "affinityd":
                let exe = try #require(CtlPaths.executable(command.program), "\(command.program) is not built")
                let rootHelp = try Self.help(exe, [])
                let known = Self.subcommands(rootHelp)
                let args = Array(command.tokens.dropFirst())
                let sub = args.first { known.contains($0) }
                if !known.isEmpty {
                    #expect(sub != nil, "\(command): no subcommand of \(command.program) (\(known.sorted()))")
                }
                let subHelp = sub.map { (try? Self.help(exe, [$0])) ?? "" } ?? ""
                var helpText = rootHelp + subHelp
                // A nested subcommand (`affinity-lab bench predict --roofline`): its own help too.
                if let sub, let i = args.firstIndex(of: sub), i + 1 < args.count,
                   Self.subcommands(subHelp).contains(args[i + 1]), let nested = try? Self.help(exe, [sub, args[i + 1]]) {
                    helpText += nested
                }
                for token in args where token.hasPrefix("--") {
                    let option = String(token.split(separator: "=").first ?? "")
                    #expect(helpText.range(of: option + #"(?![\w-])"#, options: .regularExpression) != nil,
                            "\(command): \(option) is not an option of \(command.program) \(sub ?? "")")
                }
                // Alternatives written a | b | c are values the subcommand's help names.
                for (i, token) in args.enumerated() where token == "|" {
                    for alt in [args[i - 1], args[i + 1]] {
                        #expect(helpText.contains(alt), "\(command): '\(alt)' is not in \(command.program) \(sub ?? "") --help")
                    }
                }
            default:
                let path = CtlPaths.repository.appendingPathComponent(command.program).path
                #expect(FileManager.default.isExecutableFile(atPath: path) || FileManager.default.fileExists(atPath: path),
                        "\(command): \(command.program) does not exist")
            }
        }
    }

    /// The concrete examples, run as written (through /bin/sh, so the globs expand) in a folder
    /// with the repository's samples and models and the built tools under .build/release, with
    /// HOME there too (--local keeps its state under ~/.local/state/affinity).
    @Test func concreteExamplesRunAsWritten() throws {
        let dir = try CtlPaths.temporaryDirectory("readme")
        defer { try? FileManager.default.removeItem(at: dir) }
        let binary = try #require(CtlPaths.affinityctl.map { URL(fileURLWithPath: $0).deletingLastPathComponent() })
        let fm = FileManager.default
        try fm.createDirectory(at: dir.appendingPathComponent(".build"), withIntermediateDirectories: true)
        try fm.createSymbolicLink(at: dir.appendingPathComponent(".build/release"), withDestinationURL: binary)
        try fm.createSymbolicLink(at: dir.appendingPathComponent("samples"), withDestinationURL: CtlPaths.repository.appendingPathComponent("samples"))
        let runnable = Self.commands.filter { $0.inBlock && !$0.hasPlaceholder && ["affinity-lab", "affinityctl"].contains($0.program) }
        #expect(runnable.count >= 2, "\(runnable)")
        for command in runnable {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", command.text]
            p.currentDirectoryURL = dir
            p.environment = ctlEnvironment(["HOME": dir.path, "AFFINITY_BUNDLED_MODELS": CtlPaths.repository.appendingPathComponent("models").path])
            let out = Pipe(), err = Pipe()
            p.standardOutput = out
            p.standardError = err
            p.standardInput = FileHandle.nullDevice
            try p.run()
            final class Box: @unchecked Sendable { var data = Data() }  // filled before the group is left
            let errBox = Box()
            let group = DispatchGroup()
            group.enter()
            DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
            let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            group.wait()
            p.waitUntilExit()
            let stderr = String(decoding: errBox.data, as: UTF8.self)
            #expect(p.terminationStatus == 0, "\(command): exit \(p.terminationStatus)\n\(stdout)\n\(stderr)")
            // The output the README shows right after the example (a plain ``` block), line for line;
            // times vary, so a line ending in seconds is compared up to its last comma.
            for expected in Self.expectedOutput(after: command) {
                var line = expected.trimmingCharacters(in: .whitespaces)
                if line == "…" || line.isEmpty { continue }
                if line.hasSuffix(" s"), let comma = line.range(of: ",", options: .backwards) { line = String(line[..<comma.lowerBound]) }
                #expect(stdout.contains(line), "\(command): the README shows '\(line)', the tool printed:\n\(stdout)")
            }
            if command.text.contains("--overlay overlay.png") {
                #expect(fm.fileExists(atPath: dir.appendingPathComponent("overlay.png").path), "\(command): no overlay.png")
            }
        }
    }

    /// The lines of the first plain (language-less) fenced block after `command`'s block, when
    /// no other ```sh block comes between them.
    static func expectedOutput(after command: ReadmeCommand) -> [String] {
        let lines = readme.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var i = command.line  // the line after the command (1-based → index of the next line)
        while i < lines.count, lines[i] != "```" { i += 1 }  // end of the command's block
        i += 1
        while i < lines.count {
            if lines[i] == "```sh" { return [] }
            if lines[i] == "```" { break }
            i += 1
        }
        guard i < lines.count else { return [] }
        var out: [String] = []
        i += 1
        while i < lines.count, lines[i] != "```" { out.append(lines[i]); i += 1 }
        return out
    }
}
