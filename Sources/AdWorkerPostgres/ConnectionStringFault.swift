/// Why a connection string (`DATABASE_URL`) cannot work, named by the part at fault and never
/// quoting it. libpq's own reason quotes the text it stumbled on, and that can be the password
/// (an unencoded `%` in it) or a piece of it (a conninfo value with a space), so the reason is
/// found again here by the rules libpq's parser follows (`conninfo_uri_parse_options`,
/// `conninfo_uri_parse_params`, `conninfo_uri_decode` and `conninfo_parse` in PostgreSQL 15's
/// `fe-connect.c`). Only libpq's own keywords (`password`, `sslmode`) are ever named.
struct ConnectionStringFault: Equatable, Sendable, CustomStringConvertible {
    /// A part of a `postgresql://` URL.
    enum URLPart: Equatable, Sendable {
        case user, password, host, port, database
        /// The name of query parameter n (from 1).
        case parameterName(Int)
        /// The value of query parameter n, with its name when that is one of libpq's keywords.
        case parameterValue(Int, keyword: String?)
    }

    enum Reason: Equatable, Sendable {
        /// A `%` not followed by two hex digits.
        case badPercentEncoding(URLPart)
        /// `%00`, which libpq refuses.
        case encodedNul(URLPart)
        case unclosedIPv6Bracket
        case emptyIPv6Address
        /// `[::1]` followed by something other than `:`, `/`, `?` or `,`.
        case characterAfterIPv6Address
        case parameterWithoutEquals(Int)
        case parameterWithSecondEquals(Int, keyword: String?)
        case unknownParameter(Int)
        /// A host (not a socket path) with an `@`: in a URL, one in the user name or password
        /// that was not encoded.
        case atSignInHost
        /// A port that is not a number: in a URL, what a `/` in the password does.
        case portNotANumber
        /// Word n (from 1) of a conninfo string is not followed by `=`; `after` is the keyword of
        /// the pair before it, when there is one.
        case wordWithoutEquals(Int, after: String?)
        /// The first word looks like a URL whose scheme libpq does not take (`POSTGRES://`, `pg://`).
        case unknownScheme
        case unterminatedQuote(keyword: String?)
        case unknownKeyword(Int, after: String?)
        /// libpq refused it for a reason not told apart here.
        case unrecognized
    }

    var reason: Reason
    /// Whether the text is read as a URL (`postgresql://` or `postgres://`), not as conninfo.
    var inURL: Bool

    var description: String {
        let form = inURL || reason == .unknownScheme ? "URL" : "conninfo string"
        return "DATABASE_URL is not a valid PostgreSQL \(form): \(explanation)"
    }

    private var explanation: String {
        switch reason {
        case .badPercentEncoding(let part): "\(part.name) has a '%' not followed by two hex digits (write a '%' itself as %25)"
        case .encodedNul(let part): "\(part.name) has %00, which libpq refuses"
        case .unclosedIPv6Bracket: "the host opens an IPv6 address with '[' and never closes it with ']'"
        case .emptyIPv6Address: "the host has an empty IPv6 address '[]'"
        case .characterAfterIPv6Address: "an IPv6 address in '[...]' is followed by something other than ':', '/', '?' or ','"
        case .parameterWithoutEquals(let index): "query parameter \(index) has no '=' (expected ?keyword=value&keyword=value)"
        case .parameterWithSecondEquals(let index, let keyword):
            "\(URLPart.parameterValue(index, keyword: keyword).name) has an '=' (write it as %3D)"
        case .unknownParameter(let index): "query parameter \(index) is not a libpq connection option"
        case .atSignInHost: "the host has an '@'" + (inURL ? " (write an '@' in the user name or password as %40)" : "")
        case .portNotANumber: "the port is not a number" + (inURL ? " (write a '/' in the password as %2F)" : "")
        case .wordWithoutEquals(let index, let keyword):
            if let keyword {
                "a word after the value of '\(keyword)' has no '=' (put a value with a space in single quotes)"
            } else {
                "word \(index) has no '=' (expected keyword=value pairs)"
            }
        case .unknownScheme: "it starts with neither postgresql:// nor postgres:// (lower case, nothing before it)"
        case .unterminatedQuote(let keyword):
            "\(keyword.map { "the value of '\($0)'" } ?? "a value") opens a single quote and never closes it"
        case .unknownKeyword(let index, let keyword):
            if let keyword {
                "a keyword after the value of '\(keyword)' is not a libpq connection option (put a value with a space in single quotes)"
            } else {
                "keyword \(index) is not a libpq connection option"
            }
        case .unrecognized: "libpq cannot parse it"
        }
    }

    /// The length of the scheme libpq reads as a URL's (case-sensitive), or nil for conninfo.
    private static func urlPrefixLength(_ text: String) -> Int? {
        ["postgresql://", "postgres://"].first { text.hasPrefix($0) }?.utf8.count
    }

    /// Why libpq refuses `text`, found by its rules. `keywords` are libpq's connection options.
    static func refusal(of text: String, keywords: Set<String>) -> ConnectionStringFault {
        // libpq reads a C string: it ends at the first NUL.
        let bytes = Array(text.utf8.prefix { $0 != 0 })
        if let start = urlPrefixLength(text) {
            return ConnectionStringFault(reason: urlFault(bytes, from: start, keywords: keywords) ?? .unrecognized, inURL: true)
        }
        return ConnectionStringFault(reason: conninfoFault(bytes, keywords: keywords) ?? .unrecognized, inURL: false)
    }

    /// What libpq takes but no connection can use, and would quote when the connection fails:
    /// a host with an `@` or a port that is not a number, which is what a URL's password with an
    /// unencoded `@` or `/` turns into. Socket paths (starting with `/` or `@`) may hold an `@`.
    static func mangledCredentials(in text: String, host: String?, port: String?) -> ConnectionStringFault? {
        for name in host?.split(separator: ",") ?? [] where name.first != "/" && name.first != "@" && name.contains("@") {
            return ConnectionStringFault(reason: .atSignInHost, inURL: urlPrefixLength(text) != nil)
        }
        // libpq reads a port with strtol, which takes white space around the digits.
        for number in port?.split(separator: ",") ?? [] where Int(number.filter { !$0.isWhitespace }) == nil {
            return ConnectionStringFault(reason: .portNotANumber, inURL: urlPrefixLength(text) != nil)
        }
        return nil
    }

    // MARK: - URL

    private static func urlFault(_ bytes: [UInt8], from start: Int, keywords: Set<String>) -> Reason? {
        let end = bytes.count
        func byte(_ index: Int) -> UInt8? { index < end ? bytes[index] : nil }
        var position = start
        // Credentials: an '@' before the first '/' ends them; a ':' splits user from password.
        var lookahead = start
        while let next = byte(lookahead), next != UInt8(ascii: "@"), next != UInt8(ascii: "/") { lookahead += 1 }
        if byte(lookahead) == UInt8(ascii: "@") {
            var userEnd = start
            while bytes[userEnd] != UInt8(ascii: ":") && bytes[userEnd] != UInt8(ascii: "@") { userEnd += 1 }
            if let fault = decodingFault(bytes[start..<userEnd], part: .user) { return fault }
            if bytes[userEnd] == UInt8(ascii: ":"), let fault = decodingFault(bytes[(userEnd + 1)..<lookahead], part: .password) {
                return fault
            }
            position = lookahead + 1
        }
        // Hosts and ports, separated by commas; libpq decodes each list as a whole.
        var hosts: [UInt8] = []
        var ports: [UInt8] = []
        var terminator: UInt8?
        while true {
            if byte(position) == UInt8(ascii: "[") {
                position += 1
                let hostStart = position
                while let next = byte(position), next != UInt8(ascii: "]") { position += 1 }
                guard position < end else { return .unclosedIPv6Bracket }
                guard position > hostStart else { return .emptyIPv6Address }
                hosts += bytes[hostStart..<position]
                position += 1
                if let next = byte(position), !":/?,".utf8.contains(next) { return .characterAfterIPv6Address }
            } else {
                let hostStart = position
                while let next = byte(position), !":/?,".utf8.contains(next) { position += 1 }
                hosts += bytes[hostStart..<position]
            }
            terminator = byte(position)
            if terminator == UInt8(ascii: ":") {
                position += 1
                let portStart = position
                while let next = byte(position), !"/?,".utf8.contains(next) { position += 1 }
                ports += bytes[portStart..<position]
                terminator = byte(position)
            }
            guard terminator == UInt8(ascii: ",") else { break }
            position += 1
            hosts.append(UInt8(ascii: ","))
            ports.append(UInt8(ascii: ","))
        }
        if let fault = decodingFault(hosts[...], part: .host) { return fault }
        if let fault = decodingFault(ports[...], part: .port) { return fault }
        if terminator == UInt8(ascii: "/") {
            position += 1
            let databaseStart = position
            while let next = byte(position), next != UInt8(ascii: "?") { position += 1 }
            if let fault = decodingFault(bytes[databaseStart..<position], part: .database) { return fault }
            terminator = byte(position)
        }
        guard terminator != nil else { return nil }
        return parameterFault(bytes[(position + 1)...], keywords: keywords)
    }

    /// `keyword=value&keyword=value`, each part percent-decoded, each keyword one of libpq's.
    private static func parameterFault(_ bytes: ArraySlice<UInt8>, keywords: Set<String>) -> Reason? {
        var index = 0
        for parameter in bytes.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: false) {
            // Nothing after the '?' or after a final '&' is no parameter; an empty one elsewhere has no '='.
            if parameter.isEmpty && parameter.endIndex == bytes.endIndex { break }
            index += 1
            let pieces = parameter.split(separator: UInt8(ascii: "="), maxSplits: 2, omittingEmptySubsequences: false)
            guard pieces.count >= 2 else { return .parameterWithoutEquals(index) }
            // libpq finds a second '=' before it decodes anything.
            let decodedKeyword = decoded(pieces[0])
            let keyword = (try? decodedKeyword.get()).map { String(decoding: $0, as: UTF8.self) }
            let known = keyword.flatMap { keywords.contains($0) || $0 == "requiressl" ? $0 : nil }
            guard pieces.count == 2 else { return .parameterWithSecondEquals(index, keyword: known) }
            if case .failure(let fault) = decodedKeyword { return fault.in(.parameterName(index)) }
            let value: [UInt8]
            switch decoded(pieces[1]) {
            case .success(let text): value = text
            case .failure(let fault): return fault.in(.parameterValue(index, keyword: known))
            }
            // JDBC's ssl=true, which libpq reads as sslmode=require.
            guard known != nil || (keyword == "ssl" && value == Array("true".utf8)) else { return .unknownParameter(index) }
        }
        return nil
    }

    private enum DecodingFault: Error {
        case badPercentEncoding, encodedNul

        func `in`(_ part: URLPart) -> Reason {
            switch self {
            case .badPercentEncoding: .badPercentEncoding(part)
            case .encodedNul: .encodedNul(part)
            }
        }
    }

    private static func decodingFault(_ bytes: ArraySlice<UInt8>, part: URLPart) -> Reason? {
        if case .failure(let fault) = decoded(bytes) { return fault.in(part) }
        return nil
    }

    private static func decoded(_ bytes: ArraySlice<UInt8>) -> Result<[UInt8], DecodingFault> {
        var result: [UInt8] = []
        var index = bytes.startIndex
        while index < bytes.endIndex {
            guard bytes[index] == UInt8(ascii: "%") else {
                result.append(bytes[index])
                index += 1
                continue
            }
            guard index + 2 < bytes.endIndex, let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2]) else {
                return .failure(.badPercentEncoding)
            }
            guard high != 0 || low != 0 else { return .failure(.encodedNul) }
            result.append(high << 4 | low)
            index += 3
        }
        return .success(result)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    // MARK: - conninfo

    /// `keyword = value` pairs separated by white space; a value may be in single quotes, and a
    /// backslash takes the next character as it is.
    private static func conninfoFault(_ bytes: [UInt8], keywords: Set<String>) -> Reason? {
        let end = bytes.count
        func isSpace(_ index: Int) -> Bool { index < end && [9, 10, 11, 12, 13, 32].contains(bytes[index]) }
        var position = 0
        var index = 0
        var previous: String?
        while position < end {
            if isSpace(position) {
                position += 1
                continue
            }
            index += 1
            let nameStart = position
            while position < end && bytes[position] != UInt8(ascii: "=") && !isSpace(position) { position += 1 }
            let name = String(decoding: bytes[nameStart..<position], as: UTF8.self)
            while isSpace(position) { position += 1 }
            guard position < end && bytes[position] == UInt8(ascii: "=") else {
                if index == 1 && name.contains("://") { return .unknownScheme }
                return .wordWithoutEquals(index, after: previous)
            }
            position += 1
            while isSpace(position) { position += 1 }
            let known = keywords.contains(name) || name == "requiressl" ? name : nil
            if position < end && bytes[position] == UInt8(ascii: "'") {
                position += 1
                while true {
                    guard position < end else { return .unterminatedQuote(keyword: known) }
                    let next = bytes[position]
                    position += next == UInt8(ascii: "\\") ? 2 : 1
                    if next == UInt8(ascii: "'") { break }
                }
            } else {
                while position < end && !isSpace(position) {
                    position += bytes[position] == UInt8(ascii: "\\") ? 2 : 1
                }
            }
            guard let known else { return index == 1 && name.contains("://") ? .unknownScheme : .unknownKeyword(index, after: previous) }
            previous = known
        }
        return nil
    }
}

extension ConnectionStringFault.URLPart {
    /// How a reason names the part: never by its text.
    var name: String {
        switch self {
        case .user: "the user name"
        case .password: "the password"
        case .host: "the host"
        case .port: "the port"
        case .database: "the database name"
        case .parameterName(let index): "the name of query parameter \(index)"
        case .parameterValue(_, let keyword?): "the value of query parameter '\(keyword)'"
        case .parameterValue(let index, nil): "the value of query parameter \(index)"
        }
    }
}
