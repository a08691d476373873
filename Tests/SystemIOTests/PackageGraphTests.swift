// Package.swift says what each Swift target depends on, and it is exactly what the target's
// files import (issue 22): no dependency declared and never imported, no module imported without
// being declared. System modules (Foundation, Glibc, Dispatch, Testing …) are not targets.
import Foundation
import Testing

@Suite("Package dependencies")
struct PackageGraphTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let systemModules: Set<String> = ["Foundation", "FoundationXML", "Glibc", "Musl", "Darwin", "Dispatch", "Testing", "XCTest",
                                             "Synchronization", "PackageDescription"]

    struct Target { var name: String; var folder: String; var dependencies: Set<String> }

    /// The targets of Package.swift with their folders and declared dependencies (module names).
    static func targets() throws -> [Target] {
        let text = try String(contentsOf: repository.appendingPathComponent("Package.swift"), encoding: .utf8)
        let start = try NSRegularExpression(pattern: #"\.(target|executableTarget|testTarget|systemLibrary)\(\s*name:\s*"([^"]+)""#)
        let matches = start.matches(in: text, range: NSRange(text.startIndex..., in: text))
        var out: [Target] = []
        for (i, m) in matches.enumerated() {
            let kind = String(text[Range(m.range(at: 1), in: text)!])
            let name = String(text[Range(m.range(at: 2), in: text)!])
            let from = Range(m.range, in: text)!.upperBound
            let to = i + 1 < matches.count ? Range(matches[i + 1].range, in: text)!.lowerBound : text.endIndex
            let body = String(text[from..<to])
            var folder = (kind == "testTarget" ? "Tests/" : "Sources/") + name
            if let p = body.range(of: #"path:\s*"([^"]+)""#, options: .regularExpression) {
                folder = String(body[p].split(separator: "\"")[1])
            }
            var deps = Set<String>()
            if let d = body.range(of: "dependencies:") {
                // The array after `dependencies:` up to its closing bracket.
                var depth = 0
                var list = ""
                for c in body[d.upperBound...] {
                    if c == "[" { depth += 1; if depth == 1 { continue } }
                    if c == "]" { depth -= 1; if depth == 0 { break } }
                    if depth >= 1 { list.append(c) }
                }
                let quoted = try NSRegularExpression(pattern: #"(\.product\(name:\s*)?"([^"]+)""#)
                for q in quoted.matches(in: list, range: NSRange(list.startIndex..., in: list)) {
                    let isProduct = q.range(at: 1).location != NSNotFound
                    let value = String(list[Range(q.range(at: 2), in: list)!])
                    if isProduct || !list.contains("package: \"\(value)\"") { deps.insert(value) }
                }
            }
            out.append(Target(name: name, folder: folder, dependencies: deps))
        }
        return out
    }

    /// The modules the Swift files of `folder` import (nil: a folder without Swift files).
    static func imports(_ folder: String) throws -> Set<String>? {
        let root = repository.appendingPathComponent(folder)
        guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil) else { return nil }
        let re = try NSRegularExpression(pattern: #"^(?:@_exported |@testable )?import (?:struct |enum |class |func )?([A-Za-z_][A-Za-z0-9_]*)"#, options: .anchorsMatchLines)
        var found = Set<String>()
        var sawSwift = false
        for case let url as URL in walker where url.pathExtension == "swift" {
            sawSwift = true
            let text = try String(contentsOf: url, encoding: .utf8)
            for m in re.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                found.insert(String(text[Range(m.range(at: 1), in: text)!]))
            }
        }
        return sawSwift ? found.subtracting(systemModules) : nil
    }

    @Test func declaredDependenciesAreTheImports() throws {
        let targets = try Self.targets()
        #expect(targets.count > 30, "only \(targets.count) targets read from Package.swift")
        #expect(targets.contains { $0.name == "affinityd" && $0.dependencies.contains("ArgumentParser") })
        for t in targets {
            guard let imported = try Self.imports(t.folder) else { continue }
            let declared = t.dependencies
            #expect(declared.subtracting(imported).isEmpty, "\(t.name) declares but never imports \(declared.subtracting(imported).sorted())")
            #expect(imported.subtracting(declared).isEmpty, "\(t.name) imports but does not declare \(imported.subtracting(declared).sorted())")
        }
    }
}
