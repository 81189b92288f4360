import AdWorkerPostgres
import Testing

@Suite struct CitusSetupTests {
    typealias Facts = CitusSetup.Facts
    let tables = ["training_data", "inference_results"]

    func facts(
        available: Bool = true, preloaded: Bool = true, installed: Bool = true, workerNodes: Int = 2,
        distributed: Set<String> = [], hypertables: Set<String> = []
    ) -> Facts {
        Facts(available: available, preloaded: preloaded, installed: installed, workerNodes: workerNodes, distributed: distributed, hypertables: hypertables)
    }

    @Test func aServerWithoutCitusIsLeftAloneAndNothingIsSaid() {
        #expect(CitusSetup.decide(facts(available: false, preloaded: false, installed: false, workerNodes: 0), tables: tables) == .notInstalled)
    }

    /// Creating the extension without preloading it fails: never tried.
    @Test func availableButNotPreloadedNamesTheSettingInsteadOfFailing() {
        for installed in [false, true] {
            guard case .stayLocal(let message) = CitusSetup.decide(facts(preloaded: false, installed: installed), tables: tables)
            else { Issue.record("not local"); return }
            #expect(message.contains("shared_preload_libraries") && message.contains("run adworker migrate again"))
        }
    }

    @Test func preloadedCreatesTheExtensionThenDistributesWhatIsNotDistributedYet() {
        #expect(CitusSetup.decide(facts(installed: false), tables: tables) == .createExtension)
        #expect(CitusSetup.decide(facts(), tables: tables) == .distribute(tables))
        #expect(CitusSetup.decide(facts(distributed: ["training_data"]), tables: tables) == .distribute(["inference_results"]))
        #expect(CitusSetup.decide(facts(distributed: Set(tables)), tables: tables) == .distribute([]))
    }

    @Test func withoutWorkerNodesTheTablesStayOnTheCoordinatorAndItSaysHowToAddThem() {
        guard case .stayLocal(let message) = CitusSetup.decide(facts(workerNodes: 0), tables: tables) else {
            Issue.record("not local")
            return
        }
        #expect(message.contains("citus_add_node"))
    }

    /// Never half of each: hypertables stay hypertables, and distributed tables stay distributed
    /// (TimescaleDB is then not used, see MigrateCommand).
    @Test func hypertablesStayHypertablesAndDistributedTablesStayDistributed() {
        guard case .stayLocal(let message) = CitusSetup.decide(facts(hypertables: ["inference_results"]), tables: tables) else {
            Issue.record("not local")
            return
        }
        #expect(message.contains("TimescaleDB hypertables (inference_results)"))
        #expect(CitusSetup.decide(facts(workerNodes: 0, distributed: Set(tables)), tables: tables) == .distribute([]))
    }
}
