import AdWorkerCore
import ArgumentParser
import Foundation

/// Resolves settings as flags > environment > `.env` file. Only the CLI reads the environment;
/// libraries get plain configuration structs.
struct Settings {
    private var values: [String: String]

    init(values: [String: String]) {
        self.values = values
    }

    /// The process environment over the `.env` file at `dotEnvPath` (missing file: environment only).
    static func load(dotEnvPath: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Settings {
        var values: [String: String] = [:]
        if FileManager.default.fileExists(atPath: dotEnvPath) {
            // Through a file handle, so that /dev/null (no settings file) reads as empty.
            guard let data = FileHandle(forReadingAtPath: dotEnvPath)?.readDataToEndOfFile() else {
                throw ValidationError("cannot read the settings file \(dotEnvPath)")
            }
            do {
                values = try DotEnv.parse(String(decoding: data, as: UTF8.self))
            } catch {
                throw ValidationError("\(error)")
            }
        }
        values.merge(environment) { _, fromEnvironment in fromEnvironment }
        return Settings(values: values)
    }

    func string(_ key: String) -> String? {
        guard let value = values[key], !value.isEmpty else { return nil }
        return value
    }

    func integer(_ key: String) throws -> Int? {
        guard let text = string(key) else { return nil }
        guard let value = Int(text) else { throw ValidationError("\(key) must be a whole number, not '\(text)'") }
        return value
    }

    func decimal(_ key: String) throws -> Double? {
        guard let text = string(key) else { return nil }
        guard let value = Double(text), value.isFinite else { throw ValidationError("\(key) must be a number, not '\(text)'") }
        return value
    }

    /// 1, true, yes or on; 0, false, no or off; nil when unset.
    func boolean(_ key: String) throws -> Bool? {
        guard let text = string(key) else { return nil }
        switch text.lowercased() {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default: throw ValidationError("\(key) must be 1 or 0 (true or false), not '\(text)'")
        }
    }

    /// A secret from `KEY` or from the file named by `KEY_FILE` (Docker and Kubernetes secrets,
    /// systemd credentials); an empty file is no secret (a server without a password).
    func secret(_ key: String) throws -> String? {
        if let path = string(key + "_FILE") {
            do {
                var text = try String(contentsOfFile: path, encoding: .utf8)
                while text.last == "\n" || text.last == "\r" { text.removeLast() }
                return text.isEmpty ? nil : text
            } catch {
                throw ValidationError("cannot read \(key)_FILE at \(path)")
            }
        }
        return string(key)
    }
}
