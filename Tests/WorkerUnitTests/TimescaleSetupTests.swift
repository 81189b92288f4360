import AdWorkerPostgres
import Testing

@Suite struct TimescaleSetupTests {
    typealias Facts = TimescaleSetup.Facts
    let tables = ["training_data", "inference_results"]

    @Test func plainPostgreSQLStaysPlainAndSaysHowToGetHypertables() {
        guard case .stayPlain(let message) = TimescaleSetup.decide(Facts(available: false, preloaded: false, installed: false, hypertables: []), tables: tables)
        else { Issue.record("not plain"); return }
        #expect(message.hasPrefix("TimescaleDB: not installed on this server, tables stay plain"))
    }

    /// Creating the extension without preloading it fails and drops the connection: never tried.
    @Test func availableButNotPreloadedNamesTheSettingInsteadOfFailing() {
        for installed in [false, true] {
            guard case .stayPlain(let message) = TimescaleSetup.decide(
                Facts(available: true, preloaded: false, installed: installed, hypertables: []), tables: tables
            ) else { Issue.record("not plain"); return }
            #expect(message.contains("shared_preload_libraries") && message.contains("run adworker migrate again"))
        }
    }

    @Test func preloadedCreatesTheExtensionThenConvertsWhatIsNotAHypertableYet() {
        #expect(TimescaleSetup.decide(Facts(available: true, preloaded: true, installed: false, hypertables: []), tables: tables) == .createExtension)
        #expect(TimescaleSetup.decide(Facts(available: true, preloaded: true, installed: true, hypertables: []), tables: tables) == .convert(tables))
        #expect(
            TimescaleSetup.decide(Facts(available: true, preloaded: true, installed: true, hypertables: ["training_data"]), tables: tables)
                == .convert(["inference_results"])
        )
        #expect(TimescaleSetup.decide(Facts(available: true, preloaded: true, installed: true, hypertables: Set(tables)), tables: tables) == .convert([]))
    }
}
